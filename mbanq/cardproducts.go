package mbanq

import (
	"context"
	"net/http"
	"strconv"
)

// CardProduct is a kind of card the bank set up (virtual or physical, debit
// or credit); a card order names one.
type CardProduct struct {
	ID                   int64
	Name                 string
	Active               bool
	CardType             string // DEBIT or CREDIT
	Virtual              bool
	Network              string // e.g. VISA
	CurrencyCode         string
	MaxActiveCardAllowed int // per client; 0 when unlimited or not given
}

type cardProductWire struct {
	ID                   flexInt    `json:"id"`
	Name                 string     `json:"name"`
	Active               flexBool   `json:"active"`
	CardType             enumOption `json:"cardType"`
	Virtual              flexBool   `json:"virtual"`
	Network              enumOption `json:"network"`
	CurrencyCode         string     `json:"currencyCode"`
	MaxActiveCardAllowed flexInt    `json:"maxActiveCardAllowed"`
}

func (w cardProductWire) product() CardProduct {
	return CardProduct{
		ID:                   int64(w.ID),
		Name:                 w.Name,
		Active:               bool(w.Active),
		CardType:             enumText(w.CardType),
		Virtual:              bool(w.Virtual),
		Network:              enumText(w.Network),
		CurrencyCode:         w.CurrencyCode,
		MaxActiveCardAllowed: int(w.MaxActiveCardAllowed),
	}
}

// enumText returns the text of a value sent either as a plain string or as
// an enumeration object.
func enumText(e enumOption) string {
	if e.Value != "" {
		return e.Value
	}
	return e.Code
}

// CardProducts lists the card products.
func (s *Session) CardProducts(ctx context.Context) ([]CardProduct, error) {
	var w struct {
		TotalFilteredRecords flexInt           `json:"totalFilteredRecords"`
		PageItems            []cardProductWire `json:"pageItems"`
	}
	if err := s.call(ctx, request{op: "list card products", method: http.MethodGet, path: "/v1/cardproducts", list: true}, &w); err != nil {
		return nil, err
	}
	products := make([]CardProduct, len(w.PageItems))
	for i, p := range w.PageItems {
		products[i] = p.product()
	}
	return products, nil
}

// CardProduct returns one card product.
func (s *Session) CardProduct(ctx context.Context, id int64) (CardProduct, error) {
	var w cardProductWire
	if err := s.call(ctx, request{op: "get card product", method: http.MethodGet, path: "/v1/cardproducts/" + strconv.FormatInt(id, 10)}, &w); err != nil {
		return CardProduct{}, err
	}
	return w.product(), nil
}
