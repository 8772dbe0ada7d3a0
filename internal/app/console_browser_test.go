package app_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/store"
)

// TestConsoleInABrowser runs the real flow and looks at it as an operator
// does, in headless Chromium: a processed request is on the page, and a
// dead letter is replayed with the button once its cause is fixed.
func TestConsoleInABrowser(t *testing.T) {
	const token = "console-token-for-the-browser-test"
	browser := startBrowser(t)
	b := setupWith(t, options{cfg: func(c *config.Config) { c.Operations.ConsoleToken = secret.New(token) }})
	ctx := context.Background()

	issued := request(erp, 1)
	b.publish(t, issued, event.Binary)
	late := request("urn:erp:late", 1) // not bound yet: a dead letter
	late.Subject, late.Data.Employee.ID = "E-77", "E-77"
	b.publish(t, late, event.Structured)
	b.outcomes(t, 2)
	require.EqualValues(t, 2, b.settle(t))

	// The operator logs in with the token as the basic-auth password.
	console := url.URL{Scheme: "http", User: url.UserPassword("operator", token), Host: b.svc.HTTPAddr(), Path: "/console/"}
	browser.open(console.String())
	browser.waitText("#mode", "replay enabled", false, 10*time.Second)

	row := `#requests tr[data-request-id="` + issued.ID + `"]`
	require.Equal(t, "issued", browser.text(browser.find(row+" .outcome")))
	require.Contains(t, browser.text(browser.find(row)), erp)
	require.Contains(t, browser.text(browser.find(`#requests tr[data-request-id="`+late.ID+`"]`)), "unbound_source")
	require.Contains(t, browser.text(browser.find("#bindings")), erp)
	require.Contains(t, browser.text(browser.find("#users")), "active")

	// The script ran (the strict CSP allows the embedded one) and polled.
	browser.waitText("#in-flight", "0", false, 10*time.Second)
	browser.waitText("#live-status", "Updated", false, 10*time.Second)

	dead := `#dead-letters tr[data-request-id="` + late.ID + `"]`
	require.Contains(t, browser.text(browser.find(dead)), "unbound_source")
	require.Equal(t, "failed", browser.text(browser.find(dead+" .state")))
	browser.screenshot("console-before-replay")

	// Fix the cause, as `cardbridge bindings add` would, then replay.
	require.NoError(t, b.store.AddBinding(ctx, store.Binding{Source: "urn:erp:late", ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))
	browser.click(browser.find(dead + " button.replay"))
	flash := browser.waitText("#flash", "replayed", false, 10*time.Second)
	require.Contains(t, flash, "replay 1")
	require.True(t, strings.HasSuffix(browser.url(), "#dead-letters"), browser.url())

	// The replayed request gets its card; the page shows it.
	outs := b.outcomes(t, 3)
	require.Equal(t, event.TypeCardIssued, outs[2].Type)
	require.Equal(t, late.ID, outs[2].Data.(event.Issued).RequestID)
	browser.waitText(dead+" .state", "issued", true, 15*time.Second)
	browser.waitText(`#requests tr[data-request-id="`+late.ID+`"] .outcome`, "issued", true, 15*time.Second)
	require.Empty(t, browser.find(dead+" button.replay"), "an issued request offers no replay")
	require.Equal(t, 2, b.sandbox.CardCount(1))
	browser.screenshot("console-after-replay")
}

// TestConsoleWithoutTokenInABrowser: on this machine, with no token, an
// operator who types the bare address lands on the console, whose script
// runs under the headers every answer now carries.
func TestConsoleWithoutTokenInABrowser(t *testing.T) {
	browser := startBrowser(t)
	b := setup(t)
	issued := request(erp, 1)
	b.publish(t, issued, event.Binary)
	b.outcomes(t, 1)
	require.EqualValues(t, 1, b.settle(t))

	browser.open("http://" + b.svc.HTTPAddr() + "/")
	browser.waitText("#mode", "read-only", false, 10*time.Second)
	require.True(t, strings.HasSuffix(browser.url(), "/console/"), browser.url())
	require.Equal(t, "issued", browser.text(browser.find(`#requests tr[data-request-id="`+issued.ID+`"] .outcome`)))
	browser.waitText("#live-status", "Updated", false, 10*time.Second)
}
