package client

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/discoverd/discoverd/internal/validate"
)

// The cache of ServiceSets' states (Config.CacheDir): one JSON file per
// service, <CacheDir>/<name>.json, mode 0600, replaced atomically (a
// temporary file in the same directory, synced, then renamed over it). A set
// saves its state at most once per cacheEvery while it changes, and on
// Close. The file is read only when the cluster cannot be reached for a
// set's initial state, and only after checking it: a file that is damaged,
// too large, of another format or of another service is ignored with a
// warning.

// cacheVersion is the format of the cache files this client writes and reads.
const cacheVersion = 1

// cacheEvery is the shortest interval between two saves of one set's state.
const cacheEvery = time.Second

// maxCacheBytes bounds a cache file: a larger state is not saved (and its
// older file removed), a larger file is not read.
const maxCacheBytes = 16 << 20

// cacheFile is the content of a cache file.
type cacheFile struct {
	Version   int             `json:"version"`
	Name      string          `json:"name"`
	Index     uint64          `json:"index"`          // the index of the state
	Contact   time.Time       `json:"last_contact"`   // the set's LastContact when it was saved
	Instances []cacheInstance `json:"instances"`      // oldest registration first
	Meta      *cacheMeta      `json:"meta,omitempty"` // the service's metadata, if it has any
}

// cacheMeta is the metadata of a cache file (data in base64).
type cacheMeta struct {
	Data  []byte `json:"data"`
	Index uint64 `json:"index"`
}

// cacheInstance is one instance of a cache file.
type cacheInstance struct {
	Addr        string            `json:"addr"`
	Attrs       map[string]string `json:"attrs,omitempty"`
	TTLMillis   int64             `json:"ttl_ms,omitempty"`
	CreateIndex uint64            `json:"create_index"`
	Index       uint64            `json:"index"`
	Suspect     bool              `json:"suspect,omitempty"`
}

// cachePath is the cache file of service name in dir.
func cachePath(dir, name string) string { return filepath.Join(dir, name+".json") }

// cachedSet returns a set holding name's cached state, marked stale, when
// the cluster could not be reached for its initial state (err) and CacheDir
// holds a valid cache file of name; otherwise nil. A file that fails its
// checks is ignored with a warning. The cached index is not taken as seen
// (Client.LastIndex): a file from before the cluster was rebuilt must not
// hold the client's reads back.
func (c *Client) cachedSet(name string, err error) *ServiceSet {
	if c.cfg.CacheDir == "" || !isUnreachable(err) || validate.Name(name) != nil {
		return nil
	}
	cf, lerr := loadCache(c.cfg.CacheDir, name)
	if lerr != nil {
		c.log.Warn("discoverd: ignoring the cache file", "service", name, "err", lerr)
		return nil
	}
	if cf == nil {
		return nil
	}
	online := make(map[string]*Service, len(cf.Instances))
	for _, in := range cf.Instances {
		online[in.Addr] = &Service{Name: name, Addr: in.Addr, Attrs: in.Attrs, TTL: time.Duration(in.TTLMillis) * time.Millisecond,
			CreateIndex: in.CreateIndex, Index: in.Index, Suspect: in.Suspect}
	}
	var meta Meta
	if cf.Meta != nil {
		meta = Meta{Data: cf.Meta.Data, Index: cf.Meta.Index}
	}
	s := c.newSet(name, online, meta, cf.Index)
	s.stale, s.lastContact = true, cf.Contact
	c.log.Warn("discoverd: cluster unreachable, serving the cached state", "service", name, "index", cf.Index,
		"instances", len(online), "last_contact", cf.Contact, "err", err)
	return s
}

// loadCache reads and checks name's cache file in dir. A missing file is
// not an error: it returns nil, nil.
func loadCache(dir, name string) (*cacheFile, error) {
	path := cachePath(dir, name)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cache file %s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCacheBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read cache file %s: %w", path, err)
	}
	if len(data) > maxCacheBytes {
		return nil, fmt.Errorf("cache file %s is larger than %d bytes", path, maxCacheBytes)
	}
	cf, err := decodeCache(data)
	if err == nil {
		err = cf.check(name)
	}
	if err != nil {
		return nil, fmt.Errorf("cache file %s: %w", path, err)
	}
	return cf, nil
}

// decodeCache decodes a cache file strictly: one JSON object of known fields.
func decodeCache(data []byte) (*cacheFile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var cf cacheFile
	if err := dec.Decode(&cf); err != nil {
		return nil, fmt.Errorf("damaged: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("damaged: data after the JSON object")
	}
	return &cf, nil
}

// check verifies a decoded cache file of service name: its format, its
// name, and each instance by the rules the servers apply.
func (cf *cacheFile) check(name string) error {
	if cf.Version != cacheVersion {
		return fmt.Errorf("format version %d, want %d", cf.Version, cacheVersion)
	}
	if cf.Name != name {
		return fmt.Errorf("holds service %q, not %q", cf.Name, name)
	}
	if cf.Index == 0 || cf.Contact.IsZero() {
		return errors.New("no index or no contact time")
	}
	if m := cf.Meta; m != nil && (m.Index == 0 || m.Index > cf.Index || len(m.Data) > validate.MaxMetaBytes) {
		return fmt.Errorf("metadata: index %d, %d bytes: do not fit the state's index %d or the size limit", m.Index, len(m.Data), cf.Index)
	}
	seen := make(map[string]bool, len(cf.Instances))
	for _, in := range cf.Instances {
		if err := validate.Addr(in.Addr); err != nil {
			return fmt.Errorf("instance: %w", err)
		}
		if seen[in.Addr] {
			return fmt.Errorf("instance %s listed twice", in.Addr)
		}
		seen[in.Addr] = true
		if err := validate.Attrs(in.Attrs); err != nil {
			return fmt.Errorf("instance %s: %w", in.Addr, err)
		}
		if in.TTLMillis < 0 || time.Duration(in.TTLMillis)*time.Millisecond > validate.MaxTTL {
			return fmt.Errorf("instance %s: ttl %d ms out of range", in.Addr, in.TTLMillis)
		}
		if in.CreateIndex == 0 || in.CreateIndex > in.Index || in.Index > cf.Index {
			return fmt.Errorf("instance %s: indices %d, %d do not fit the state's %d", in.Addr, in.CreateIndex, in.Index, cf.Index)
		}
	}
	return nil
}

// saveCacheIfDue saves the set's state if it changed and the last save is
// at least cacheEvery old.
func (s *ServiceSet) saveCacheIfDue(now time.Time) {
	s.mu.RLock()
	due := s.dirty && now.Sub(s.savedAt) >= cacheEvery
	s.mu.RUnlock()
	if due {
		s.saveCache()
	}
}

// saveCache saves the set's state to its cache file if it changed since the
// last save. Only the set's monitor calls it, then the set's end: never two
// at once.
func (s *ServiceSet) saveCache() {
	dir := s.c.cfg.CacheDir
	if dir == "" {
		return
	}
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return
	}
	cf := s.cacheFileLocked()
	s.dirty, s.savedAt = false, time.Now()
	s.mu.Unlock()
	path := cachePath(dir, s.name)
	data, err := json.Marshal(cf)
	if err == nil && len(data) > maxCacheBytes {
		// An older, smaller state must not pass for the last one.
		_ = os.Remove(path)
		err = fmt.Errorf("the state is %d bytes, the limit is %d: not saved, older file removed", len(data), maxCacheBytes)
	}
	if err == nil {
		err = writeFileAtomic(path, data)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if !s.cacheFailed { // once per run of failures
			s.c.log.Warn("discoverd: cannot save the service's cache file", "service", s.name, "path", path, "err", err)
		}
		s.cacheFailed = true
		return
	}
	s.cacheFailed = false
}

// cacheFileLocked returns the set's state as a cache file. Lock must be held.
func (s *ServiceSet) cacheFileLocked() *cacheFile {
	cf := &cacheFile{Version: cacheVersion, Name: s.name, Index: s.index, Contact: s.lastContact,
		Instances: make([]cacheInstance, 0, len(s.online))}
	for _, svc := range s.online {
		cf.Instances = append(cf.Instances, cacheInstance{Addr: svc.Addr, Attrs: svc.Attrs, TTLMillis: svc.TTL.Milliseconds(),
			CreateIndex: svc.CreateIndex, Index: svc.Index, Suspect: svc.Suspect})
	}
	slices.SortFunc(cf.Instances, func(a, b cacheInstance) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
	if s.meta.Index != 0 {
		cf.Meta = &cacheMeta{Data: s.meta.Data, Index: s.meta.Index}
	}
	return cf
}

// writeFileAtomic replaces path with data, mode 0600: readers see the old
// file or the new one, never a part. It creates path's directory (0700) if
// need be.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
