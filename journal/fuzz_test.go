package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/guestward/guestward/internal/fsx/fsxtest"
)

func fuzzEntries() []Entry {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	return []Entry{
		{OpID: "a", VMID: 1, Kind: "start", State: Started},
		{OpID: "op-7f3a", VMID: 100, Kind: "set_config", State: Started, IdempKey: "req-9",
			Params: map[string]string{"cores": "2", "memory": "2048", "net0": "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0"}, At: at},
		{OpID: "op-7f3a", State: TaskRunning, UPID: "UPID:pve1:00001234:00005678:65A1B2C3:qmstart:100:root@pam:", At: at},
		{OpID: "op-7f3a", State: Failed, Error: "VM 100 is locked (backup)", At: time.Unix(0, -1).UTC()},
		{OpID: "ü✓", VMID: 999999999, Kind: "stop", State: Succeeded, At: time.Unix(0, 1<<62).UTC()},
	}
}

// FuzzEntryDecode: the entry decoder never panics, and accepts exactly the
// canonical encodings of valid entries: whatever it accepts re-encodes to
// the same bytes and passes Validate.
func FuzzEntryDecode(f *testing.F) {
	for _, e := range fuzzEntries() {
		b, err := e.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0, 0x80, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Entry
		if err := e.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("decoded an entry that fails Validate: %v", err)
		}
		again, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encoding a decoded entry: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted a non-canonical encoding:\n in  %x\n out %x", data, again)
		}
	})
}

// frameFile returns a journal file image holding the records of es, written
// as one batch.
func frameFile(es []Entry) []byte {
	var buf []byte
	for i := range es {
		buf = appendFrame(buf, kindRecord, &es[i])
	}
	sealFrames(buf, fileHeaderSize)
	return append(appendFileHeader(nil), buf...)
}

// FuzzFrameDamage: damaging a sealed record with any burst of up to 32
// bits, anywhere in its frame, is always detected (CRC-32C detects every
// burst that short), so the decoder never takes a damaged record for a good
// one.
func FuzzFrameDamage(f *testing.F) {
	f.Add(uint8(1), uint16(0), uint32(1))
	f.Add(uint8(2), uint16(5), uint32(0xffffffff))
	f.Add(uint8(3), uint16(17), uint32(0x80000001))
	f.Add(uint8(4), uint16(9), uint32(0x00010000))
	f.Fuzz(func(t *testing.T, which uint8, pos uint16, mask uint32) {
		es := fuzzEntries()
		e := es[int(which)%len(es)]
		if e.At.IsZero() {
			e.At = time.Unix(1, 0).UTC()
		}
		frame := frameFile([]Entry{e})[fileHeaderSize:]
		p := int(pos) % len(frame)
		if mask == 0 {
			return
		}
		damaged := bytes.Clone(frame)
		var m [4]byte
		binary.LittleEndian.PutUint32(m[:], mask)
		for i := 0; i < 4 && p+i < len(damaged); i++ {
			damaged[p+i] ^= m[i]
		}
		if bytes.Equal(damaged, frame) {
			return // the mask only touched bytes past the end
		}
		total, need, err := parseFrame(damaged, fileHeaderSize, int64(len(damaged)))
		if err == nil && need == 0 {
			var got Entry
			if derr := decodeEntry(damaged[frameHeaderSize+1:total], &got, nil, nil); derr == nil {
				t.Fatalf("damage at byte %d (mask %#x) went unnoticed: decoded %+v", p, mask, got)
			}
		}
	})
}

// FuzzOpen: whatever bytes a journal file holds, OpenFile never panics and
// either fails (with ErrCorrupt carrying an offset inside the file, for
// damage) or succeeds with a state that a second open reproduces exactly.
func FuzzOpen(f *testing.F) {
	es := fuzzEntries()
	es[2].OpID, es[3].OpID = es[1].OpID, "zz" // keep the lifecycle valid
	es[3] = Entry{OpID: "zz", VMID: 5, Kind: "stop", State: Started}
	valid := frameFile(es)
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(appendFileHeader(nil))
	f.Add([]byte("GWJOURNL"))
	f.Add([]byte{})
	mid := bytes.Clone(valid)
	mid[fileHeaderSize+20] ^= 0xff
	f.Add(mid)
	f.Fuzz(func(t *testing.T, data []byte) {
		disk := fsxtest.New()
		disk.WriteFile(crashPath, data, 0o600)
		j, err := OpenFile(crashPath, withFSSmall(disk), WithCompactThreshold(0))
		if err != nil {
			var ce *CorruptError
			if errors.As(err, &ce) {
				if !errors.Is(err, ErrCorrupt) || ce.Offset < 0 || ce.Offset >= int64(max(len(data), 1)) {
					t.Fatalf("corruption reported at offset %d of a %d-byte file: %v", ce.Offset, len(data), err)
				}
				return
			}
			t.Fatalf("open failed without ErrCorrupt: %v", err)
		}
		first := dumpJournal(j)
		size := j.Stats().Size
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		if len(data) > 0 && size > int64(len(data)) {
			t.Fatalf("recovered journal of %d bytes is longer than the %d-byte file", size, len(data))
		}
		j, err = OpenFile(crashPath, withFSSmall(disk), WithCompactThreshold(0))
		if err != nil {
			t.Fatalf("second open: %v", err)
		}
		defer j.Close()
		if again := dumpJournal(j); again != first {
			t.Fatalf("state differs across reopen:\n%s\n----\n%s", first, again)
		}
		if _, err := ScanFile(context.Background(), crashPath, nil, withFSSmall(disk)); err != nil {
			t.Fatalf("ScanFile after a successful open: %v", err)
		}
	})
}
