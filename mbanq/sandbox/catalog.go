package sandbox

import (
	"fmt"
	"net/http"
	"sort"
)

// This file serves the data the bank sets up and cardbridge only reads:
// roles, clients and card products. It is fixed by the Seed, so it is read
// without locks; the one exception is a card product's active flag, which
// the bank's staff can change in its console (SetCardProductActive).

type roleJSON struct {
	ID            int64  `json:"id"`
	Name          string `json:"name"`
	Description   string `json:"description"`
	Disabled      bool   `json:"disabled"`
	IsSelfService bool   `json:"isSelfService"`
}

func (s *Server) rolesJSON(ids []int64) []roleJSON {
	out := make([]roleJSON, 0, len(ids))
	for _, id := range ids {
		if r, ok := s.roles[id]; ok {
			out = append(out, roleJSON{ID: r.ID, Name: r.Name, Description: r.Description, Disabled: r.Disabled, IsSelfService: r.IsSelfService})
		}
	}
	return out
}

// handleRoles serves GET /v1/roles.
func (s *Server) handleRoles(r *http.Request, p *principal, _ []byte) (any, *apiError) {
	return s.rolesJSON(s.roleIDs), nil
}

type enumJSON struct {
	ID    int64  `json:"id"`
	Code  string `json:"code"`
	Value string `json:"value"`
}

// handleGetClient serves GET /v1/clients/{id}. A self-service user gets 404
// for clients outside its scope, as from Fineract's self-service API.
func (s *Server) handleGetClient(r *http.Request, p *principal, _ []byte) (any, *apiError) {
	id, aerr := pathID(r)
	if aerr != nil {
		return nil, aerr
	}
	c, ok := s.clients[id]
	if !ok || !p.user.inScope(id) {
		return nil, errNotFound("Client", "error.msg.client.id.invalid", id)
	}
	status := enumJSON{ID: 300, Code: "clientStatusType.active", Value: "Active"}
	if !c.Active {
		status = enumJSON{ID: 100, Code: "clientStatusType.pending", Value: "Pending"}
	}
	legal := enumJSON{ID: 2, Code: "legalFormType.entity", Value: "ENTITY"}
	if c.LegalForm == 1 {
		legal = enumJSON{ID: 1, Code: "legalFormType.person", Value: "PERSON"}
	}
	accountNo := c.AccountNo
	if accountNo == "" {
		accountNo = fmt.Sprintf("%09d", c.ID)
	}
	return map[string]any{
		"id":          c.ID,
		"accountNo":   accountNo,
		"displayName": c.DisplayName,
		"status":      status,
		"active":      c.Active,
		"legalForm":   legal,
		"officeId":    c.OfficeID,
		"officeName":  s.offices[c.OfficeID].Name,
	}, nil
}

func productJSON(p CardProduct) map[string]any {
	return map[string]any{
		"id":                   p.ID,
		"name":                 p.Name,
		"active":               p.Active,
		"cardType":             p.CardType,
		"virtual":              p.Virtual,
		"network":              p.Network,
		"currencyCode":         p.CurrencyCode,
		"maxActiveCardAllowed": p.MaxActiveCardAllowed,
	}
}

// product returns a card product as it is now: the seed's, with the
// current active flag.
func (s *Server) product(id int64) (CardProduct, bool) {
	p, ok := s.products[id]
	if ok {
		p.Active = s.productActive[id].Load()
	}
	return p, ok
}

// SetCardProductActive activates or deactivates a card product, as the
// bank's staff would in its console; orders of the product are refused
// while it is inactive. It returns an error if the product does not exist.
func (s *Server) SetCardProductActive(id int64, active bool) error {
	a, ok := s.productActive[id]
	if !ok {
		return fmt.Errorf("sandbox: card product %d does not exist", id)
	}
	a.Store(active)
	return nil
}

// handleCardProducts serves GET /v1/cardproducts.
func (s *Server) handleCardProducts(r *http.Request, p *principal, _ []byte) (any, *apiError) {
	items := make([]map[string]any, len(s.productList))
	for i, cp := range s.productList {
		cp, _ = s.product(cp.ID)
		items[i] = productJSON(cp)
	}
	return map[string]any{"totalFilteredRecords": len(items), "pageItems": items}, nil
}

// handleCardProduct serves GET /v1/cardproducts/{id}.
func (s *Server) handleCardProduct(r *http.Request, p *principal, _ []byte) (any, *apiError) {
	id, aerr := pathID(r)
	if aerr != nil {
		return nil, aerr
	}
	cp, ok := s.product(id)
	if !ok {
		return nil, errNotFound("Card product", "error.msg.cardproduct.id.invalid", id)
	}
	return productJSON(cp), nil
}

func sortedIDs[T any](m map[int64]T) []int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}
