package sandbox

import (
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Card statuses; cards ordered from the sandbox are ACTIVE at once, as
// MBanq's virtual cards are.
const (
	CardStatusActive = "ACTIVE"
)

// Card is a card in the sandbox, as the inspection API shows it.
type Card struct {
	ID               int64     `json:"id"`
	ClientID         int64     `json:"clientId"`
	SavingsAccountID int64     `json:"savingsAccountId"`
	ProductID        int64     `json:"productId"`
	UserID           int64     `json:"userId,omitempty"`
	CardToken        string    `json:"cardToken"`
	Status           string    `json:"status"`
	Virtual          bool      `json:"virtual"`
	LastFour         string    `json:"lastFour"`
	ExpiryDate       string    `json:"expiryDate"`
	OrderedBy        int64     `json:"orderedBy"` // user id of the caller
	CreatedAt        time.Time `json:"createdAt"`
}

// cardStore holds the cards. One short critical section per order; reads of
// single cards and counts take the read lock.
type cardStore struct {
	mu       sync.RWMutex
	byID     map[int64]*Card
	byClient map[int64]int
	active   map[[2]int64]int // (client, product) -> active cards
	nextID   int64
}

func newCardStore() *cardStore {
	return &cardStore{byID: map[int64]*Card{}, byClient: map[int64]int{}, active: map[[2]int64]int{}, nextID: 1}
}

// add stores c with the next id unless the client has max active cards of
// the product already (max 0 is no limit).
func (st *cardStore) add(c *Card, max int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	k := [2]int64{c.ClientID, c.ProductID}
	if max > 0 && st.active[k] >= max {
		return false
	}
	c.ID = st.nextID
	st.nextID++
	st.byID[c.ID] = c
	st.byClient[c.ClientID]++
	st.active[k]++
	return true
}

func (st *cardStore) get(id int64) *Card {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.byID[id]
}

var cardParams = []string{"productId", "savingsAccountId", "savingsProductId", "clientId", "userId", "locale", "dateFormat"}

// handleOrderCard serves POST /v1/cards.
func (s *Server) handleOrderCard(r *http.Request, p *principal, body []byte) (any, *apiError) {
	in, aerr := parseParams(body, "card", cardParams)
	if aerr != nil {
		return nil, aerr
	}
	productID := in.int("productId")
	clientID := in.int("clientId")
	accountID := in.int("savingsAccountId")
	userID := in.int("userId")
	if !in.has("productId") || productID <= 0 {
		in.fail("productId", "cannot.be.blank", "The parameter productId is mandatory.", nil)
	}
	if !in.has("clientId") || clientID <= 0 {
		in.fail("clientId", "cannot.be.blank", "The parameter clientId is mandatory.", nil)
	}
	switch {
	case in.has("savingsAccountId"):
		if accountID <= 0 {
			in.fail("savingsAccountId", "not.greater.than.zero", "The parameter savingsAccountId must be greater than 0.", accountID, 0)
		}
	case in.has("savingsProductId"):
		// Opening an account along with the card is not simulated.
		in.fail("savingsProductId", "not.supported.by.sandbox", "The sandbox needs savingsAccountId; opening an account with savingsProductId is not simulated.", nil)
	default:
		in.fail("savingsAccountId", "cannot.be.blank", "One of savingsAccountId or savingsProductId is mandatory.", nil)
	}
	if len(in.errs) > 0 {
		return nil, errValidation(in.errs...)
	}

	client, ok := s.clients[clientID]
	if !ok || !p.user.inScope(clientID) {
		return nil, errNotFound("Client", "error.msg.client.id.invalid", clientID)
	}
	product, ok := s.product(productID)
	if !ok {
		return nil, errNotFound("Card product", "error.msg.cardproduct.id.invalid", productID)
	}
	account, ok := s.savings[accountID]
	if !ok {
		return nil, errNotFound("Savings account", "error.msg.saving.account.id.invalid", accountID)
	}
	if !client.Active {
		return nil, errDomainRule("error.msg.client.not.active", fmt.Sprintf("Client with identifier %d is not active.", clientID), "clientId", clientID)
	}
	if !product.Active {
		return nil, errDomainRule("error.msg.cardproduct.not.active", fmt.Sprintf("Card product with identifier %d is not active.", productID), "productId", productID)
	}
	if account.ClientID != clientID {
		return nil, errDomainRule("error.msg.card.savings.account.not.of.client",
			fmt.Sprintf("Savings account %d does not belong to client %d.", accountID, clientID), "savingsAccountId", accountID)
	}
	if !account.Active {
		return nil, errDomainRule("error.msg.saving.account.not.active", fmt.Sprintf("Savings account %d is not active.", accountID), "savingsAccountId", accountID)
	}
	if in.has("userId") {
		if u := s.users.byID(userID); u == nil {
			return nil, errNotFound("User", "error.msg.user.id.invalid", userID)
		}
	}

	token := uuid.New()
	now := s.now()
	c := &Card{
		ClientID: clientID, SavingsAccountID: accountID, ProductID: productID, UserID: userID,
		CardToken: token.String(), Status: CardStatusActive, Virtual: product.Virtual,
		LastFour:   fmt.Sprintf("%04d", (int(token[0])<<8|int(token[1]))%10000),
		ExpiryDate: now.AddDate(3, 0, 0).Format("2006-01"),
		OrderedBy:  p.user.ID, CreatedAt: now,
	}
	if !s.cards.add(c, product.MaxActiveCardAllowed) {
		return nil, errDomainRule("error.msg.card.max.active.cards.reached",
			fmt.Sprintf("Client %d has the maximum of %d active cards of product %d.", clientID, product.MaxActiveCardAllowed, productID), "productId", productID)
	}
	s.stats.cardsCreated.Add(1)
	return map[string]any{
		"id":                 c.ID,
		"resourceId":         c.ID,
		"resourceIdentifier": c.CardToken,
		"cardToken":          c.CardToken,
		"clientId":           c.ClientID,
	}, nil
}

// handleGetCard serves GET /v1/cards/{id}.
func (s *Server) handleGetCard(r *http.Request, p *principal, _ []byte) (any, *apiError) {
	id, aerr := pathID(r)
	if aerr != nil {
		return nil, aerr
	}
	c := s.cards.get(id)
	if c == nil || !p.user.inScope(c.ClientID) {
		return nil, errNotFound("Card", "error.msg.card.id.invalid", id)
	}
	product, _ := s.product(c.ProductID)
	return map[string]any{
		"id":                   c.ID,
		"clientId":             c.ClientID,
		"savingsAccountId":     c.SavingsAccountID,
		"productId":            c.ProductID,
		"productName":          product.Name,
		"userId":               c.UserID,
		"cardToken":            c.CardToken,
		"status":               c.Status,
		"virtual":              c.Virtual,
		"cardType":             product.CardType,
		"network":              product.Network,
		"primaryAccountNumber": "************" + c.LastFour,
		"expiryDate":           c.ExpiryDate,
		"createdAt":            c.CreatedAt.UTC().Format(time.RFC3339),
	}, nil
}

// Cards returns every card, by id.
func (s *Server) Cards() []Card {
	s.cards.mu.RLock()
	out := make([]Card, 0, len(s.cards.byID))
	for _, c := range s.cards.byID {
		out = append(out, *c)
	}
	s.cards.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// CardCount returns how many cards a client has.
func (s *Server) CardCount(clientID int64) int {
	s.cards.mu.RLock()
	defer s.cards.mu.RUnlock()
	return s.cards.byClient[clientID]
}

// CardCounts returns the number of cards per client id.
func (s *Server) CardCounts() map[int64]int {
	s.cards.mu.RLock()
	defer s.cards.mu.RUnlock()
	out := make(map[int64]int, len(s.cards.byClient))
	for k, v := range s.cards.byClient {
		out[k] = v
	}
	return out
}
