package event

import "testing"

// BenchmarkRejectHostile is the cost of refusing each input of the hostile
// catalogue (hostile_test.go), every one at or near MaxEventSize. None
// should cost more than 1 ms of CPU; docs/performance.md has the figures
// (its section on hostile input).
//
//	go test -run XXX -bench RejectHostile -benchmem -count 5 ./event
func BenchmarkRejectHostile(b *testing.B) {
	for _, in := range hostileInputs() {
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(size(in.header, in.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(in.header, in.body); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}
