package mbanq

import (
	"context"
	"errors"
	"net/http"
	"strconv"
)

// Card statuses.
const (
	CardStatusOrdered         = "ORDERED"
	CardStatusActive          = "ACTIVE"
	CardStatusPending         = "PENDING"
	CardStatusOrderInProgress = "ORDER_IN_PROGRESS"
	CardStatusOrderFailed     = "ORDER_FAILED"
	CardStatusSuspended       = "SUSPENDED"
	CardStatusTerminated      = "TERMINATED"
)

// OrderCardRequest is the body of POST /v1/cards. Whether the card is
// virtual is a property of the product.
type OrderCardRequest struct {
	ProductID        int64 `json:"productId"`
	SavingsAccountID int64 `json:"savingsAccountId"`
	ClientID         int64 `json:"clientId"`
	// UserID optionally names the user the card is for.
	UserID int64 `json:"userId,omitempty"`
}

// Card is a card. OrderCard fills the fields MBanq returns on creation (ID,
// ResourceID, ResourceIdentifier, CardToken, ClientID); GetCard fills the
// rest.
type Card struct {
	ID                 int64
	ResourceID         int64
	ResourceIdentifier string
	CardToken          string
	ClientID           int64
	Status             string // CardStatus...
	ProductID          int64
	SavingsAccountID   int64
	UserID             int64
	Virtual            bool
	CardType           string
	Network            string
	// PrimaryAccountNumber is masked by MBanq (e.g. ************1234).
	PrimaryAccountNumber string
	ExpiryDate           string
}

type cardWire struct {
	ID                   flexInt    `json:"id"`
	ResourceID           flexInt    `json:"resourceId"`
	ResourceIdentifier   flexString `json:"resourceIdentifier"`
	CardToken            flexString `json:"cardToken"`
	ClientID             flexInt    `json:"clientId"`
	Status               enumOption `json:"status"`
	ProductID            flexInt    `json:"productId"`
	SavingsAccountID     flexInt    `json:"savingsAccountId"`
	UserID               flexInt    `json:"userId"`
	Virtual              flexBool   `json:"virtual"`
	CardType             enumOption `json:"cardType"`
	Network              enumOption `json:"network"`
	PrimaryAccountNumber flexString `json:"primaryAccountNumber"`
	ExpiryDate           flexString `json:"expiryDate"`
}

// check refuses a success that does not name the card (a body lost or cut
// in transit, say): the card may well exist, and only asking again under
// the same Idempotency-Key tells which card it is (see exchange).
func (w *cardWire) check() error {
	if w.ID <= 0 && w.ResourceID <= 0 {
		return errors.New("the answer names no card id")
	}
	if w.CardToken == "" {
		return errors.New("the answer has no cardToken")
	}
	return nil
}

func (w cardWire) card() Card {
	c := Card{
		ID:                   int64(w.ID),
		ResourceID:           int64(w.ResourceID),
		ResourceIdentifier:   string(w.ResourceIdentifier),
		CardToken:            string(w.CardToken),
		ClientID:             int64(w.ClientID),
		Status:               enumText(w.Status),
		ProductID:            int64(w.ProductID),
		SavingsAccountID:     int64(w.SavingsAccountID),
		UserID:               int64(w.UserID),
		Virtual:              bool(w.Virtual),
		CardType:             enumText(w.CardType),
		Network:              enumText(w.Network),
		PrimaryAccountNumber: string(w.PrimaryAccountNumber),
		ExpiryDate:           string(w.ExpiryDate),
	}
	if c.ID == 0 {
		c.ID = c.ResourceID
	}
	if c.ResourceID == 0 {
		c.ResourceID = c.ID
	}
	return c
}

// OrderCard orders a card; a success means the card exists and is active.
// idempotencyKey must identify the card request (e.g. derived from the
// CloudEvent's source and id) and be the same for every try of it, in this
// process or another: MBanq then answers a repeat with the card it already
// created instead of creating a second one.
func (s *Session) OrderCard(ctx context.Context, req OrderCardRequest, idempotencyKey string) (Card, error) {
	var w cardWire
	if err := s.call(ctx, request{op: "order card", method: http.MethodPost, path: "/v1/cards", body: req, idemKey: idempotencyKey}, &w); err != nil {
		return Card{}, err
	}
	c := w.card()
	if c.Status == "" {
		c.Status = CardStatusActive
	}
	return c, nil
}

// GetCard returns a card. A self-service user only sees its clients' cards.
func (s *Session) GetCard(ctx context.Context, id int64) (Card, error) {
	var w cardWire
	if err := s.call(ctx, request{op: "get card", method: http.MethodGet, path: "/v1/cards/" + strconv.FormatInt(id, 10)}, &w); err != nil {
		return Card{}, err
	}
	return w.card(), nil
}
