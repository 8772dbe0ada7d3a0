package event

import (
	"strconv"

	"github.com/google/uuid"
)

// outcomeNamespace is the UUIDv5 namespace of outcome ids. It must never
// change: subscribers and JetStream deduplicate on the ids derived from it.
// (It was itself derived once as the URL-namespace UUIDv5 of
// "https://github.com/cardbridge/cardbridge/outcome-id".)
var outcomeNamespace = uuid.MustParse("9dc41bde-53e5-5579-af21-09d7e070d341")

// OutcomeID returns the CloudEvent id of the outcome (card.issued or
// card.failed) of the request (requestSource, requestID). It is a UUIDv5, so
// every publication of that outcome, by any instance, after any crash,
// carries the same id, and JetStream's duplicate window drops the repeats.
//
// The name hashed is len(source) ":" source id: the length prefix keeps the
// pairs ("a:b", "c") and ("a", "b:c") apart, which a plain separator would not.
func OutcomeID(requestSource, requestID string) string {
	name := make([]byte, 0, 8+len(requestSource)+len(requestID))
	name = strconv.AppendInt(name, int64(len(requestSource)), 10)
	name = append(name, ':')
	name = append(name, requestSource...)
	name = append(name, requestID...)
	return uuid.NewSHA1(outcomeNamespace, name).String()
}
