package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/internal/validate"
)

// The meta command: a service's metadata, read and changed by
// compare-and-set on its index (docs/protocol.md, SetMeta).

// metaUse is the usage line of meta.
const metaUse = "discoverd meta get NAME [-json] | discoverd meta set NAME [-index N] [-file F] | discoverd meta delete NAME [-index N]"

// stdin is where meta set reads its data without -file (a variable for
// the tests).
var stdin io.Reader = os.Stdin

func runMeta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "meta", metaUse, []subcommand{
		{"get", "prints the data (-json: with its index); exit status 1 if there is none", runMetaGet},
		{"set", "sets it from -file or standard input, if it is at -index (0, the default: only if there is none); prints the new index", runMetaSet},
		{"delete", "deletes it (with -index: only if it is at that index)", runMetaDelete},
	}, args, stdout, stderr)
}

// jsonMeta is the -json shape of meta get.
type jsonMeta struct {
	Name  string `json:"name"`
	Index uint64 `json:"index"` // 0: none
	Size  int    `json:"size"`
	// Data is the data as text, when it is UTF-8; DataBase64 always holds
	// it exactly.
	Data       *string `json:"data,omitempty"`
	DataBase64 []byte  `json:"data_base64"`
}

func runMetaGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("meta get", "NAME", stderr)
	cf.register(fs)
	asJSON := fs.Bool("json", false, `print {"name","index","size","data","data_base64"} (data: as text, if it is UTF-8); with no metadata, index 0 and exit status 0`)
	consistent := fs.Bool("consistent", false, "linearizable read, confirmed by the leader")
	name, err := parseName(fs, args)
	if err != nil {
		return err
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	m, err := cl.GetMeta(rctx, name, client.MetaOptions{Consistent: *consistent})
	if err != nil {
		return err
	}
	if *asJSON {
		out := jsonMeta{Name: name, Index: m.Index, Size: len(m.Data), DataBase64: m.Data}
		if out.DataBase64 == nil {
			out.DataBase64 = []byte{}
		}
		if utf8.Valid(m.Data) {
			text := string(m.Data)
			out.Data = &text
		}
		return writeJSON(stdout, out)
	}
	if m.Index == 0 {
		return fmt.Errorf("%s has no metadata (create it with: discoverd meta set %s -file F)", name, name)
	}
	// The data exactly as stored, for a file or a pipe; what it is, beside.
	if _, err := stdout.Write(m.Data); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "metadata of %s at index %d (%s)\n", name, m.Index, plural(len(m.Data), "byte", "bytes"))
	return nil
}

func runMetaSet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("meta set", "NAME", stderr)
	cf.register(fs)
	index := fs.Uint64("index", 0, "set it only if it is at this index (what meta get says); 0: only if the service has none")
	file := fs.String("file", "", "read the data from this file (default: standard input); at most 64 KiB")
	name, err := parseName(fs, args)
	if err != nil {
		return err
	}
	data, err := readMetaData(*file)
	if err != nil {
		return err
	}
	if err := validate.Meta(name, data); err != nil {
		return usageErr("%v", err)
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	idx, err := cl.SetMeta(rctx, name, data, *index)
	if err != nil {
		return conflictHint(name, err)
	}
	_, err = fmt.Fprintln(stdout, idx)
	return err
}

// readMetaData reads meta set's data from path, or from standard input
// when path is "" — unless that is a terminal: the data must come from
// somewhere.
func readMetaData(path string) ([]byte, error) {
	r := stdin
	what := "standard input"
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageErr("-file: %v", err)
		}
		defer f.Close()
		r, what = f, path
	} else if f, ok := stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return nil, usageErr("no data: give it with -file F, or on standard input (discoverd meta set NAME < F)")
		}
	}
	// One byte past the limit is enough to refuse it.
	data, err := io.ReadAll(io.LimitReader(r, validate.MaxMetaBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return data, nil
}

func runMetaDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newFlagSet("meta delete", "NAME", stderr)
	cf.register(fs)
	index := fs.Uint64("index", 0, "delete it only if it is at this index; 0 (the default): whatever its index")
	name, err := parseName(fs, args)
	if err != nil {
		return err
	}
	cl, rctx, done, err := cf.request(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := cl.DeleteMeta(rctx, name, *index); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return fmt.Errorf("%s has no metadata: nothing to delete", name)
		}
		return conflictHint(name, err)
	}
	fmt.Fprintf(stdout, "deleted the metadata of %s\n", name)
	return nil
}

// conflictHint adds to a conflict what to do about it: the index the
// metadata is at now, and how to read it.
func conflictHint(name string, err error) error {
	cur, ok := client.ConflictIndex(err)
	switch {
	case !ok:
		return err
	case cur == 0:
		return fmt.Errorf("%w; %s has no metadata now: create it with -index 0", err, name)
	}
	return fmt.Errorf("%w; it is at index %d now: read it (discoverd meta get %s) and retry with -index %d", err, cur, name, cur)
}
