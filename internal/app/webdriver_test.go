package app_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

// This file is a minimal W3C WebDriver client: just enough to drive a
// headless Chromium through chromedriver's HTTP/JSON protocol, so the
// console is tested in a real browser without a browser-automation
// dependency.

// browserInstall is how CI and developers get the browser.
const browserInstall = "apt-get install -y chromium chromium-driver"

// webElementKey names an element reference in WebDriver answers.
const webElementKey = "element-6066-11e4-a52e-4f735466cecf"

type browser struct {
	t       *testing.T
	base    string // chromedriver's URL
	session string
}

// startBrowser starts chromedriver and a headless Chromium session. A
// missing browser fails the test, never skips it: CI installs it.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	driver, err := exec.LookPath("chromedriver")
	if err != nil {
		t.Fatalf("chromedriver is required for the console's browser test (%s): %v", browserInstall, err)
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is required for the console's browser test (%s): %v", browserInstall, err)
	}
	port := testenv.FreePort(t)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "chromedriver.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(driver, "--port="+strconv.Itoa(port), "--allowed-ips=127.0.0.1", "--log-level=WARNING")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromedriver: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
	})
	b := &browser{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port)}

	deadline := time.Now().Add(15 * time.Second)
	for {
		var status struct {
			Ready bool `json:"ready"`
		}
		if err := b.call(http.MethodGet, "/status", nil, &status); err == nil && status.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver did not become ready on port %d", port)
		}
		time.Sleep(50 * time.Millisecond)
	}

	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chromium,
			"args": []string{
				"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
				"--disable-background-networking", "--disable-component-update", "--disable-sync",
				"--disable-dev-shm-usage", "--window-size=1400,1000",
				"--user-data-dir=" + t.TempDir(),
			},
		},
	}}}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(http.MethodPost, "/session", caps, &sess); err != nil {
		t.Fatalf("starting a Chromium session: %v", err)
	}
	b.session = sess.SessionID
	t.Cleanup(func() { _ = b.call(http.MethodDelete, "/session/"+b.session, nil, nil) })
	return b
}

// webDriverError is an error answer of the protocol.
type webDriverError struct {
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *webDriverError) Error() string { return e.Code + ": " + e.Message }

// call makes one protocol request; the answer's "value" is decoded into out.
func (b *browser) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var answer struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return fmt.Errorf("%s %s: HTTP %d, undecodable answer: %w", method, path, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e webDriverError
		if json.Unmarshal(answer.Value, &e) == nil && e.Code != "" {
			return &e
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(answer.Value, out)
	}
	return nil
}

func (b *browser) must(err error) {
	b.t.Helper()
	if err != nil {
		b.screenshot("failure")
		b.t.Fatal(err)
	}
}

func (b *browser) open(url string) {
	b.t.Helper()
	b.must(b.call(http.MethodPost, "/session/"+b.session+"/url", map[string]string{"url": url}, nil))
}

// find returns the element that css selects, or "" when there is none.
func (b *browser) find(css string) string {
	b.t.Helper()
	var el map[string]string
	err := b.call(http.MethodPost, "/session/"+b.session+"/element", map[string]string{"using": "css selector", "value": css}, &el)
	if e, ok := err.(*webDriverError); ok && e.Code == "no such element" {
		return ""
	}
	b.must(err)
	return el[webElementKey]
}

func (b *browser) text(el string) string {
	b.t.Helper()
	var s string
	b.must(b.call(http.MethodGet, "/session/"+b.session+"/element/"+el+"/text", nil, &s))
	return s
}

func (b *browser) click(el string) {
	b.t.Helper()
	b.must(b.call(http.MethodPost, "/session/"+b.session+"/element/"+el+"/click", map[string]any{}, nil))
}

func (b *browser) url() string {
	b.t.Helper()
	var s string
	b.must(b.call(http.MethodGet, "/session/"+b.session+"/url", nil, &s))
	return s
}

// waitText waits until the element css selects shows text containing
// want, reloading the page between looks when reload is set. It returns
// the text.
func (b *browser) waitText(css, want string, reload bool, within time.Duration) string {
	b.t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for {
		if el := b.find(css); el != "" {
			last = b.text(el)
			if strings.Contains(last, want) {
				return last
			}
		}
		if time.Now().After(deadline) {
			b.screenshot("timeout")
			b.t.Fatalf("waiting for %q in %s: last text %q", want, css, last)
		}
		if reload {
			b.must(b.call(http.MethodPost, "/session/"+b.session+"/refresh", map[string]any{}, nil))
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// screenshot saves the page as a PNG in the test's temporary folder, or in
// CARDBRIDGE_SCREENSHOTS when set (to look at it).
func (b *browser) screenshot(name string) string {
	var data string
	if err := b.call(http.MethodGet, "/session/"+b.session+"/screenshot", nil, &data); err != nil {
		b.t.Logf("screenshot: %v", err)
		return ""
	}
	png, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return ""
	}
	dir := os.Getenv("CARDBRIDGE_SCREENSHOTS")
	if dir == "" {
		dir = b.t.TempDir()
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot: %v", err)
		return ""
	}
	b.t.Logf("screenshot: %s", path)
	return path
}
