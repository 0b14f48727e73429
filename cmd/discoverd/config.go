package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// A server's config file (-config FILE): YAML or JSON, one key per flag of
// `discoverd server`, named as the flag is (without the dash). A flag given
// on the command line wins over the file. Values are what the flag takes,
// written as YAML or JSON scalars ("500ms", 8192, true); a list is joined
// with commas, and a map (for -peers) becomes id=addr pairs. An unknown
// key, or a value its flag refuses, is an error naming the key; nothing
// else is checked here that the flags do not check themselves.

// maxConfigSize bounds a config file: a few hundred keys at most.
const maxConfigSize = 1 << 20

// applyConfigFile sets the flags of fs that path names and the command line
// did not set.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return usageErr("-config: %v", err)
	}
	if len(data) > maxConfigSize {
		return usageErr("-config %s: %d bytes, more than a config file can be (%d)", path, len(data), maxConfigSize)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return usageErr("-config %s: not YAML or JSON: %v", path, err)
	}
	var keys map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&keys); err != nil {
		return usageErr("-config %s: want a map of flag names to values: %v", path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if k == "config" || fs.Lookup(k) == nil {
			return usageErr("-config %s: unknown key %q: keys are the flags of `discoverd server -h`, without the dash", path, k)
		}
		v, err := configValue(keys[k])
		if err != nil {
			return usageErr("-config %s: key %q: %v", path, k, err)
		}
		if given[k] {
			continue // the command line wins
		}
		if err := fs.Set(k, v); err != nil {
			return usageErr("-config %s: key %q: invalid value %q: %v (want what -%s takes: %s)", path, k, v, err, k, fs.Lookup(k).Usage)
		}
	}
	return nil
}

// configValue renders one value as its flag's text.
func configValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return fmt.Sprint(v), nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, err := configValue(e)
			if err != nil {
				return "", err
			}
			if strings.Contains(s, ",") {
				return "", fmt.Errorf("list element %q holds a comma", s)
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		ids := make([]string, 0, len(v))
		for id := range v {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		parts := make([]string, len(ids))
		for i, id := range ids {
			s, ok := v[id].(string)
			if !ok {
				return "", fmt.Errorf("map value of %q: want a string, got %v", id, v[id])
			}
			parts[i] = id + "=" + s
		}
		return strings.Join(parts, ","), nil
	case nil:
		return "", fmt.Errorf("no value")
	}
	return "", fmt.Errorf("unsupported value %v", v)
}
