package wire

// Backups (docs/protocol.md, "Snapshots"; docs/backup.md). A backup file
// travels in chunks, never in one frame: SnapshotSave streams it from the
// leader, and a restore uploads it to the leader with SnapshotRestoreBegin,
// SnapshotRestoreChunk (as many as it takes) and SnapshotRestoreCommit, on
// one connection.
const (
	MethodSnapshotSave          = "SnapshotSave"
	MethodSnapshotRestoreBegin  = "SnapshotRestoreBegin"
	MethodSnapshotRestoreChunk  = "SnapshotRestoreChunk"
	MethodSnapshotRestoreCommit = "SnapshotRestoreCommit"
)

// SnapshotChunkSize is how much of a backup file one SnapshotSave frame
// carries.
const SnapshotChunkSize = 256 << 10

// SnapshotSaveRequest asks the leader for a backup. It has no fields.
type SnapshotSaveRequest struct{}

// SnapshotChunk is one frame of a SnapshotSave stream: the next bytes of
// the file. The first frame also says the file's size; the stream has
// carried the whole file when that many bytes came.
type SnapshotChunk struct {
	Size uint64 `codec:"size,omitempty"` // first frame: the whole file's size in bytes
	Data []byte `codec:"data"`
}

// SnapshotRestoreBeginRequest opens a restore upload on the connection
// (replacing one already open there).
type SnapshotRestoreBeginRequest struct {
	Size      uint64 `codec:"size"`                 // the whole file's size in bytes
	BumpIndex uint64 `codec:"bump_index,omitempty"` // raise the restored state's index by this much (docs/backup.md)
}

// SnapshotRestoreBeginResponse says how large a chunk the node takes.
type SnapshotRestoreBeginResponse struct {
	MaxChunk uint64 `codec:"max_chunk"` // bytes of data one SnapshotRestoreChunk may carry
}

// SnapshotRestoreChunkRequest carries the next bytes of the file.
type SnapshotRestoreChunkRequest struct {
	Offset uint64 `codec:"offset"` // where Data goes in the file: the bytes sent so far
	Data   []byte `codec:"data"`
}

// SnapshotRestoreCommitRequest restores the uploaded file. It has no fields.
type SnapshotRestoreCommitRequest struct{}

// SnapshotRestoreResponse says what a restore did.
type SnapshotRestoreResponse struct {
	RaftIndex     uint64 `codec:"raft_index"`     // the Raft index the restored snapshot took
	Index         uint64 `codec:"index"`          // the restored state's index
	SnapshotIndex uint64 `codec:"snapshot_index"` // the index the backup's state was at
	Services      uint64 `codec:"services"`
	Instances     uint64 `codec:"instances"`
	Meta          uint64 `codec:"meta"` // services with metadata
	StateHash     string `codec:"state_hash"`
}

// The chunks have decoders of their own: the reflective codec, bounded by
// Handle's MaxInitLen so that a lying length cannot reserve memory, grows a
// byte slice in small steps, and took over 0.1 s to decode one 256 KiB
// chunk — minutes for a backup of a large state. A chunk's bytes are in the
// frame already, so copying them out reserves nothing a frame did not.

func (c *SnapshotChunk) decodeMsgpack(b []byte) error {
	*c = SnapshotChunk{}
	r := newReader(b)
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "size":
			c.Size, err = r.Uint()
		case "data":
			c.Data, err = r.Bytes()
		default:
			return false, nil
		}
		return true, err
	})
}

func (q *SnapshotRestoreChunkRequest) decodeMsgpack(b []byte) error {
	*q = SnapshotRestoreChunkRequest{}
	r := newReader(b)
	return r.Fields(func(k string) (bool, error) {
		var err error
		switch k {
		case "offset":
			q.Offset, err = r.Uint()
		case "data":
			q.Data, err = r.Bytes()
		default:
			return false, nil
		}
		return true, err
	})
}
