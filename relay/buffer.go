package relay

// replayBuffer keeps the most recent encoded event frames, bounded by count and by bytes, so a
// client that reconnects can be sent exactly what it missed. It is not safe for concurrent use:
// the Server guards it with its mutex.
type replayBuffer struct {
	maxEvents int
	maxBytes  int

	frames [][]byte // ring; frames[(start+i)%len] has seq firstSeq+i
	start  int
	count  int
	bytes  int
	first  int64 // seq of the oldest frame held; lastSeq+1 when empty
	last   int64 // seq of the newest frame ever appended
}

func newReplayBuffer(maxEvents, maxBytes int) *replayBuffer {
	return &replayBuffer{maxEvents: maxEvents, maxBytes: maxBytes, frames: make([][]byte, maxEvents), first: 1}
}

// add appends the frame of event seq (which must be last+1) and evicts the oldest frames past
// the bounds. A single frame over maxBytes is still kept: the newest event is always available.
func (b *replayBuffer) add(seq int64, frame []byte) {
	if b.count == b.maxEvents {
		b.evict()
	}
	b.frames[(b.start+b.count)%b.maxEvents] = frame
	b.count++
	b.bytes += len(frame)
	b.last = seq
	for b.bytes > b.maxBytes && b.count > 1 {
		b.evict()
	}
}

func (b *replayBuffer) evict() {
	f := b.frames[b.start]
	b.frames[b.start] = nil
	b.start = (b.start + 1) % b.maxEvents
	b.count--
	b.bytes -= len(f)
	b.first++
}

// since returns the frames after seq, oldest first, and whether all of them are still held
// (false when some that followed seq were evicted).
func (b *replayBuffer) since(seq int64) (frames [][]byte, complete bool) {
	if seq < 0 {
		seq = 0
	}
	complete = seq >= b.first-1
	from := seq + 1
	if from < b.first {
		from = b.first
	}
	n := b.last - from + 1
	if n <= 0 {
		return nil, complete
	}
	frames = make([][]byte, 0, n)
	for s := from; s <= b.last; s++ {
		frames = append(frames, b.frames[(b.start+int(s-b.first))%b.maxEvents])
	}
	return frames, complete
}

// firstSeq is the oldest seq held (last+1 when empty).
func (b *replayBuffer) firstSeq() int64 {
	if b.count == 0 {
		return b.last + 1
	}
	return b.first
}
