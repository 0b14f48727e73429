package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/snapfile"
)

// The snapshot command: back the cluster's state up to a file, look into
// one, and restore one (docs/backup.md).

// snapshotUse is the usage line of snapshot.
const snapshotUse = "discoverd snapshot save FILE | discoverd snapshot inspect [-json] FILE | discoverd snapshot restore [-bump-index N] FILE"

// snapshotTimeout is -timeout's default for save and restore: a transfer
// of a large state takes longer than a request.
const snapshotTimeout = 10 * time.Minute

func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "snapshot", snapshotUse, []subcommand{
		{"save", "writes a backup of the cluster's state, taken on the leader, to FILE", runSnapshotSave},
		{"inspect", "checks FILE and prints its header and what it holds", func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			return runSnapshotInspect(args, stdout, stderr)
		}},
		{"restore", "replaces the whole state of the cluster, on every node, with FILE's", runSnapshotRestore},
	}, args, stdout, stderr)
}

// snapshotCommand parses the flags of save or restore (with the client
// flags, -timeout defaulting to snapshotTimeout, and whatever extra adds)
// and the one FILE argument, and opens the client: done releases it.
func snapshotCommand(ctx context.Context, sub string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (
	path string, cl *client.Client, rctx context.Context, done func(), err error) {
	var cf clientFlags
	fs := newFlagSet("snapshot "+sub, "FILE", stderr)
	cf.register(fs)
	t := fs.Lookup("timeout")
	t.Usage = "how long the whole transfer may take, failovers included"
	t.DefValue = snapshotTimeout.String()
	_ = t.Value.Set(t.DefValue)
	if extra != nil {
		extra(fs)
	}
	if path, err = parseFile(fs, args); err != nil {
		return "", nil, nil, nil, err
	}
	cl, rctx, done, err = cf.request(ctx)
	return path, cl, rctx, done, err
}

// parseFile parses the flags and the one FILE argument.
func parseFile(fs *flag.FlagSet, args []string) (string, error) {
	if err := parse(fs, args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		return "", usageErr("want FILE")
	}
	return fs.Arg(0), nil
}

func runSnapshotSave(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	path, cl, rctx, done, err := snapshotCommand(ctx, "save", args, stderr, nil)
	if err != nil {
		return err
	}
	defer done()
	// The file appears whole or not at all: written aside, synced, renamed.
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name()) // fails once renamed
	}()
	hdr, err := cl.SaveSnapshot(rctx, tmp)
	if err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "saved %s: %d bytes, index %d, raft index %d (term %d), sha256 %s\n",
		path, snapfile.HeaderSize+hdr.Size, hdr.Applied, hdr.Index, hdr.Term, hdr.Checksum())
	return nil
}

// jsonSnapshot is the -json shape of snapshot inspect.
type jsonSnapshot struct {
	File            string    `json:"file"`
	FormatVersion   int       `json:"format_version"`
	RaftIndex       uint64    `json:"raft_index"`
	Term            uint64    `json:"term"`
	Index           uint64    `json:"index"`
	Created         time.Time `json:"created"`
	Size            uint64    `json:"size"`
	BodySize        uint64    `json:"body_size"`
	SHA256          string    `json:"sha256"`
	SnapshotVersion int       `json:"snapshot_version"`
	Services        int       `json:"services"`
	Instances       int       `json:"instances"`
	Meta            int       `json:"meta"`
	RequestIDs      int       `json:"request_ids"`
}

func runSnapshotInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("snapshot inspect", "FILE", stderr)
	asJSON := fs.Bool("json", false, `print {"file","format_version","raft_index","term","index","created","size","body_size","sha256","snapshot_version","services","instances","meta","request_ids"}`)
	path, err := parseFile(fs, args)
	if err != nil {
		return err
	}
	out, err := inspectSnapshot(path)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "file\t%s\n", out.File)
	fmt.Fprintf(tw, "format\tdiscoverd snapshot, version %d\n", out.FormatVersion)
	fmt.Fprintf(tw, "raft index\t%d (term %d)\n", out.RaftIndex, out.Term)
	fmt.Fprintf(tw, "index\t%d\n", out.Index)
	fmt.Fprintf(tw, "created\t%s\n", out.Created.Format(time.RFC3339Nano))
	fmt.Fprintf(tw, "size\t%d bytes (body %d)\n", out.Size, out.BodySize)
	fmt.Fprintf(tw, "sha256\t%s (checked)\n", out.SHA256)
	fmt.Fprintf(tw, "state format\tversion %d\n", out.SnapshotVersion)
	fmt.Fprintf(tw, "services\t%d\n", out.Services)
	fmt.Fprintf(tw, "instances\t%d\n", out.Instances)
	fmt.Fprintf(tw, "metadata\t%d services\n", out.Meta)
	fmt.Fprintf(tw, "request ids\t%d\n", out.RequestIDs)
	return tw.Flush()
}

// inspectSnapshot checks a backup file the way a restore does — header,
// size, checksum, every value of the state — and summarizes it.
func inspectSnapshot(path string) (*jsonSnapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hdr, err := snapfile.ReadHeader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	body := hdr.BodyReader(f)
	sum, err := fsm.SummarizeSnapshot(body)
	if _, berr := io.Copy(io.Discard, body); berr != nil {
		return nil, fmt.Errorf("%s: %w", path, berr) // damage first: it explains the rest
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &jsonSnapshot{File: path, FormatVersion: hdr.Version, RaftIndex: hdr.Index, Term: hdr.Term, Index: hdr.Applied,
		Created: hdr.Created, Size: snapfile.HeaderSize + hdr.Size, BodySize: hdr.Size, SHA256: hdr.Checksum(),
		SnapshotVersion: sum.Version, Services: sum.Services, Instances: sum.Instances, Meta: sum.Meta, RequestIDs: sum.Requests}, nil
}

func runSnapshotRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var bump *uint64
	path, cl, rctx, done, err := snapshotCommand(ctx, "restore", args, stderr, func(fs *flag.FlagSet) {
		bump = fs.Uint64("bump-index", 0, "raise the restored state's index this much beyond the backup's: past indices a lost cluster showed its clients after the backup (docs/backup.md)")
	})
	if err != nil {
		return err
	}
	defer done()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	res, err := cl.RestoreSnapshot(rctx, f, st.Size(), client.RestoreOptions{BumpIndex: *bump})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(stdout, "restored %s: index %d (the backup's was %d), raft index %d: %d services, %d instances, %d with metadata; state hash %s\n",
		path, res.Index, res.SnapshotIndex, res.RaftIndex, res.Services, res.Instances, res.Meta, res.StateHash)
	return nil
}
