package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// child is one OS process of the bench's stack (the sandbox or a
// cardbridge instance). Its stderr, and stdout unless the caller takes it,
// go to a log file, written by the child itself so the bench spends no CPU
// copying logs while it measures.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	started time.Time
	// httpAddr is where a cardbridge instance serves /metrics.
	httpAddr string

	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done

	maxRSS     atomic.Int64 // largest VmRSS sampled, bytes
	terminated atomic.Bool
}

// startChild starts bin with args and env. stdout, when not nil, receives
// the child's standard output (through a pipe and a goroutine of exec's).
func startChild(name, bin string, args, env []string, logPath string, stdout io.Writer) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stderr = f
	cmd.Stdout = f
	if stdout != nil {
		cmd.Stdout = io.MultiWriter(f, stdout)
	}
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, logFile: f, started: time.Now(), done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// exitError describes how the child ended, with the end of its log, for a
// child that was not supposed to end yet. Call it only after done.
func (c *child) exitError() error {
	return fmt.Errorf("%s (pid %d) exited: %v; last log lines:\n%s", c.name, c.pid(), c.waitErr, c.logTail(8))
}

// terminate asks the child to shut down gracefully: SIGTERM, which
// cardbridge and the sandbox handle by draining. Only once, since a
// second signal could be taken as a demand to hurry.
func (c *child) terminate() {
	if c.terminated.CompareAndSwap(false, true) {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
}

// stop terminates the child and kills it if it has not exited after grace.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
	default:
		c.terminate()
		t := time.NewTimer(grace)
		select {
		case <-c.done:
		case <-t.C:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		t.Stop()
	}
	c.logFile.Close()
}

// sampleRSS records the current resident set size, keeping the largest.
func (c *child) sampleRSS() {
	st, err := readProcStatus(c.pid())
	if err != nil {
		return
	}
	for {
		old := c.maxRSS.Load()
		if st.rss <= old || c.maxRSS.CompareAndSwap(old, st.rss) {
			return
		}
	}
}

// usage is what the bench reports of one process.
func (c *child) usage(role string) ProcessReport {
	p := ProcessReport{Role: role, PID: c.pid(), MaxSampledRSSBytes: c.maxRSS.Load()}
	if st, err := readProcStatus(c.pid()); err == nil {
		p.MaxSampledRSSBytes = max(p.MaxSampledRSSBytes, st.rss)
		// The kernel updates VmHWM lazily (on unmapping and the like), so
		// a sample can exceed it by a page or two; the peak is the larger.
		p.PeakRSSBytes = max(st.hwm, p.MaxSampledRSSBytes)
	}
	return p
}

// logTail returns the last n lines of the child's log.
func (c *child) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return "(log unreadable: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// procStatus holds the memory figures of /proc/<pid>/status, in bytes.
type procStatus struct {
	rss, hwm int64
}

// readProcStatus reads VmRSS and VmHWM (the peak RSS the kernel kept
// track of, which a sampler can miss). Linux only; elsewhere it fails and
// the report says the figures are unknown.
func readProcStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	var st procStatus
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &st.rss
		case "VmHWM":
			dst = &st.hwm
		default:
			continue
		}
		f := strings.Fields(val) // "12345 kB"
		if len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				*dst = kb * 1024
			}
		}
	}
	return st, nil
}

// userHZ is the unit of the CPU times in /proc. It is 100 on every Linux
// build that matters; reading it properly (sysconf) would need cgo.
const userHZ = 100

// readProcCPU returns the CPU time (user + system) a process used so far;
// pid 0 means the bench itself, with the embedded NATS server.
func readProcCPU(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	_, d, err := parseProcStat(b)
	return d, err
}

// parseProcStat reads the command name and the CPU time (user + system)
// from the contents of /proc/<pid>/stat.
func parseProcStat(b []byte) (comm string, cpu time.Duration, err error) {
	// The command name (field 2) may hold spaces and parentheses; the
	// fields that follow start after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	j := bytes.IndexByte(b, '(')
	if i < 0 || j < 0 || j > i {
		return "", 0, errors.New("unexpected /proc stat format")
	}
	comm = string(b[j+1 : i])
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return "", 0, errors.New("unexpected /proc stat format")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return "", 0, errors.New("unexpected /proc stat format")
	}
	return comm, time.Duration(utime+stime) * time.Second / userHZ, nil
}

// readCommandCPU returns the CPU time used so far by every process named
// comm (e.g. "postgres": the postmaster and all its backends), by pid.
// A process that exits between two readings takes its CPU time with it,
// so the figure is a lower bound; the long-lived backends of cardbridge's
// pool, which do nearly all of a run's database work, are all counted.
//
// Postgres processes have one thread each, so the scheduler's count for
// it (/proc/<pid>/schedstat, in nanoseconds) is the process's CPU time;
// it is preferred to stat's clock ticks, which lose up to a tick (10 ms)
// per process and reading, about 8 ms per backend over a run: with 32
// connections that hid most of a short baseline's Postgres CPU.
func readCommandCPU(comm string) map[int]time.Duration {
	out := map[int]time.Duration{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if c, d, err := parseProcStat(b); err == nil && c == comm {
			if ns, err := readSchedCPU(pid); err == nil {
				d = ns
			}
			out[pid] = d
		}
	}
	return out
}

// readSchedCPU reads the time the main thread of pid ran, in nanoseconds
// (the first field of /proc/<pid>/schedstat).
func readSchedCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, errors.New("unexpected /proc schedstat format")
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, errors.New("unexpected /proc schedstat format")
	}
	return time.Duration(ns), nil
}

// machineCPU is the machine-wide CPU time from /proc/stat: busy and total
// summed over all CPUs.
type machineCPU struct {
	busy, total time.Duration
}

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}, errors.New("unexpected /proc/stat format")
	}
	// user nice system idle iowait irq softirq steal; guest time is
	// already counted in user.
	var ticks [8]int64
	for i := range ticks {
		if ticks[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return machineCPU{}, errors.New("unexpected /proc/stat format")
		}
	}
	var total int64
	for _, t := range ticks {
		total += t
	}
	idle := ticks[3] + ticks[4]
	toDur := func(t int64) time.Duration { return time.Duration(t) * time.Second / userHZ }
	return machineCPU{busy: toDur(total - idle), total: toDur(total)}, nil
}

// logSummary counts the warnings and errors in cardbridge's JSON logs and
// names the commonest messages: a benchmark that "passed" while cardbridge
// logged retries is worth a second look.
func logSummary(paths []string) *LogSummary {
	s := &LogSummary{}
	counts := map[[2]string]int{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Bytes()
			// Cheap filter first: most lines are INFO and need no parsing.
			if !bytes.Contains(line, []byte(`"level":"WARN"`)) && !bytes.Contains(line, []byte(`"level":"ERROR"`)) {
				continue
			}
			var l struct{ Level, Msg string }
			if json.Unmarshal(line, &l) != nil {
				continue
			}
			switch l.Level {
			case "WARN":
				s.Warnings++
			case "ERROR":
				s.Errors++
			default:
				continue
			}
			counts[[2]string{l.Level, l.Msg}]++
		}
		f.Close()
	}
	for k, n := range counts {
		s.Top = append(s.Top, LogLine{Level: k[0], Msg: k[1], Count: n})
	}
	sort.Slice(s.Top, func(i, j int) bool {
		if s.Top[i].Count != s.Top[j].Count {
			return s.Top[i].Count > s.Top[j].Count
		}
		return s.Top[i].Msg < s.Top[j].Msg
	})
	if len(s.Top) > 5 {
		s.Top = s.Top[:5]
	}
	return s
}

// lineWatcher is an io.Writer that calls match on every complete line
// until match returns true; it lets the bench read the address the
// sandbox announces on stdout.
type lineWatcher struct {
	mu    sync.Mutex
	buf   []byte
	match func(line string) bool
	found bool
}

// Write scans p for complete lines; it never fails, so the child never
// blocks on its stdout.
func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.found {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if w.match(line) {
			w.found, w.buf = true, nil
			break
		}
	}
	if len(w.buf) > 64*1024 { // no newline in sight: do not grow forever
		w.buf = nil
	}
	return len(p), nil
}
