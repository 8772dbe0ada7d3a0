package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// InstanceReport is the share of the work one cardbridge instance did, as
// the instance itself counts it (cardbridge_requests_total on its
// /metrics, read at the end of the run, so warm-up included): the outcomes
// it committed. Share is its part of all issued outcomes the instances
// committed.
type InstanceReport struct {
	Name   string  `json:"name"`
	PID    int     `json:"pid"`
	Issued int64   `json:"issued"`
	Failed int64   `json:"failed"`
	Share  float64 `json:"share"`
	// Error says why the counts could not be read.
	Error string `json:"error,omitempty"`
}

// instanceReports reads each running instance's outcome counts.
func (s *stack) instanceReports(ctx context.Context) []InstanceReport {
	client := &http.Client{Timeout: 5 * time.Second}
	var out []InstanceReport
	var issued int64
	for _, c := range s.running() {
		ir := InstanceReport{Name: c.name, PID: c.pid()}
		counts, err := outcomeCounts(ctx, client, "http://"+c.httpAddr+"/metrics")
		if err != nil {
			ir.Error = err.Error()
		}
		ir.Issued, ir.Failed = counts["issued"], counts["failed"]
		issued += ir.Issued
		out = append(out, ir)
	}
	for i := range out {
		if issued > 0 {
			out[i].Share = float64(out[i].Issued) / float64(issued)
		}
	}
	return out
}

// outcomeCounts sums cardbridge_requests_total by outcome, over types.
func outcomeCounts(ctx context.Context, client *http.Client, url string) (map[string]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading metrics: %s", resp.Status)
	}
	return parseOutcomeCounts(bufio.NewScanner(resp.Body))
}

func parseOutcomeCounts(sc *bufio.Scanner) (map[string]int64, error) {
	counts := map[string]int64{}
	for sc.Scan() {
		line := sc.Text()
		labels, ok := strings.CutPrefix(line, "cardbridge_requests_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(labels, "} ")
		if !ok {
			continue
		}
		_, outcome, ok := strings.Cut(labels, `outcome="`)
		if !ok {
			continue
		}
		outcome, _, _ = strings.Cut(outcome, `"`)
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		counts[outcome] += int64(v)
	}
	return counts, sc.Err()
}

// splitLine describes the instances' shares for the text report.
func splitLine(instances []InstanceReport) string {
	parts := make([]string, 0, len(instances))
	for _, in := range instances {
		if in.Error != "" {
			parts = append(parts, fmt.Sprintf("%s (pid %d) unknown: %s", in.Name, in.PID, in.Error))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (pid %d) %s issued (%.1f%%)", in.Name, in.PID, num(float64(in.Issued)), 100*in.Share))
	}
	return strings.Join(parts, ", ")
}
