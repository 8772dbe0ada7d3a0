package mbanq

import (
	"context"
	"net/http"
	"strconv"
)

// Legal forms of a client.
const (
	LegalFormPerson = 1
	LegalFormEntity = 2
)

// ClientInfo is an MBanq client: the bank's customer, here the business
// whose employees get cards. (Named ClientInfo because Client is this
// package's API client.)
type ClientInfo struct {
	ID          int64
	AccountNo   string
	DisplayName string
	Active      bool
	// Status is e.g. {300, "clientStatusType.active", "Active"}.
	Status     Status
	LegalForm  int // LegalFormPerson or LegalFormEntity
	OfficeID   int64
	OfficeName string
}

// Status is a Fineract enumeration value.
type Status struct {
	ID    int64
	Code  string
	Value string
}

type clientWire struct {
	ID          flexInt    `json:"id"`
	AccountNo   flexString `json:"accountNo"`
	DisplayName string     `json:"displayName"`
	Active      flexBool   `json:"active"`
	Status      enumOption `json:"status"`
	LegalForm   enumOption `json:"legalForm"`
	OfficeID    flexInt    `json:"officeId"`
	OfficeName  string     `json:"officeName"`
}

// GetClient returns a client. A self-service user only sees its own clients;
// others answer 404.
func (s *Session) GetClient(ctx context.Context, id int64) (ClientInfo, error) {
	var w clientWire
	if err := s.call(ctx, request{op: "get client", method: http.MethodGet, path: "/v1/clients/" + strconv.FormatInt(id, 10)}, &w); err != nil {
		return ClientInfo{}, err
	}
	return ClientInfo{
		ID:          int64(w.ID),
		AccountNo:   string(w.AccountNo),
		DisplayName: w.DisplayName,
		Active:      bool(w.Active),
		Status:      Status(w.Status),
		LegalForm:   int(w.LegalForm.ID),
		OfficeID:    int64(w.OfficeID),
		OfficeName:  w.OfficeName,
	}, nil
}
