package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// Values of DefaultSeed, exported so that a client can be configured for a
// sandbox started with it. They are public test values, not secrets.
const (
	DefaultTenantID          = "default"
	DefaultOAuthClientID     = "cardbridge"
	DefaultOAuthClientSecret = "sandbox-client-secret"
	DefaultAdminUsername     = "mifos"
	DefaultAdminPassword     = "password"
	// DefaultSelfServiceRoleID is the id of the "Self Service User" role in
	// DefaultSeed. Clients should discover it (GET /v1/roles) rather than
	// rely on it: it differs per tenant at the real bank.
	DefaultSelfServiceRoleID = 5
)

// Permissions checked by the sandbox. A role with PermissionAll may do
// everything.
const (
	PermissionAll             = "ALL_FUNCTIONS"
	PermissionReadUser        = "READ_USER"
	PermissionCreateUser      = "CREATE_USER"
	PermissionUpdateUser      = "UPDATE_USER"
	PermissionReadRole        = "READ_ROLE"
	PermissionReadClient      = "READ_CLIENT"
	PermissionReadCardProduct = "READ_CARDPRODUCT"
	PermissionCreateCard      = "CREATE_CARD"
	PermissionReadCard        = "READ_CARD"
)

// Seed is the initial state of a sandbox tenant.
type Seed struct {
	TenantID    string      `json:"tenantId"`
	OAuthClient OAuthClient `json:"oauthClient"`
	// Admin is the NeoBank's system user (user id 1).
	Admin           SeedUser         `json:"admin"`
	Offices         []Office         `json:"offices"`
	Roles           []Role           `json:"roles"`
	Clients         []Client         `json:"clients"`
	SavingsAccounts []SavingsAccount `json:"savingsAccounts"`
	CardProducts    []CardProduct    `json:"cardProducts"`
	// Users are further users created at start (ids 2, 3... in order).
	Users []SeedUser `json:"users,omitempty"`
}

// OAuthClient is the OAuth client every token request must name.
type OAuthClient struct {
	ID     string        `json:"id"`
	Secret secret.String `json:"secret"`
}

// UnmarshalJSON reads the secret as a plain JSON string.
func (o *OAuthClient) UnmarshalJSON(b []byte) error {
	var w struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*o = OAuthClient{ID: w.ID, Secret: secret.New(w.Secret)}
	return nil
}

// SeedUser is a user present from the start.
type SeedUser struct {
	Username          string        `json:"username"`
	Password          secret.String `json:"password"`
	Firstname         string        `json:"firstname"`
	Lastname          string        `json:"lastname"`
	Email             string        `json:"email,omitempty"`
	OfficeID          int64         `json:"officeId"`
	Roles             []int64       `json:"roles"`
	IsSelfServiceUser bool          `json:"isSelfServiceUser,omitempty"`
	Clients           []int64       `json:"clients,omitempty"`
}

// UnmarshalJSON reads the password as a plain JSON string.
func (u *SeedUser) UnmarshalJSON(b []byte) error {
	type plain SeedUser // same fields, no methods
	var w struct {
		plain
		Password string `json:"password"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*u = SeedUser(w.plain)
	u.Password = secret.New(w.Password)
	return nil
}

// Office is a branch of the bank.
type Office struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// Role is a set of permissions. IsSelfService marks the role of self-service
// users.
type Role struct {
	ID            int64    `json:"id"`
	Name          string   `json:"name"`
	Description   string   `json:"description,omitempty"`
	Disabled      bool     `json:"disabled,omitempty"`
	IsSelfService bool     `json:"isSelfService,omitempty"`
	Permissions   []string `json:"permissions"`
}

// Client is a customer of the bank; for cardbridge, a business.
type Client struct {
	ID          int64  `json:"id"`
	AccountNo   string `json:"accountNo,omitempty"`
	DisplayName string `json:"displayName"`
	Active      bool   `json:"active"`
	OfficeID    int64  `json:"officeId"`
	// LegalForm is 1 (person) or 2 (entity).
	LegalForm int `json:"legalForm"`
}

// SavingsAccount is a deposit account of a client; cards draw on it.
type SavingsAccount struct {
	ID           int64  `json:"id"`
	AccountNo    string `json:"accountNo,omitempty"`
	ClientID     int64  `json:"clientId"`
	CurrencyCode string `json:"currencyCode"`
	Active       bool   `json:"active"`
}

// CardProduct is a kind of card set up by the bank.
type CardProduct struct {
	ID           int64  `json:"id"`
	Name         string `json:"name"`
	Active       bool   `json:"active"`
	CardType     string `json:"cardType"` // DEBIT or CREDIT
	Virtual      bool   `json:"virtual"`
	Network      string `json:"network"`
	CurrencyCode string `json:"currencyCode"`
	// MaxActiveCardAllowed per client; 0 is unlimited.
	MaxActiveCardAllowed int `json:"maxActiveCardAllowed"`
}

// SelfServicePermissions are the permissions of the self-service role in
// DefaultSeed: read its clients and card products, order and read cards.
var SelfServicePermissions = []string{PermissionReadClient, PermissionReadCardProduct, PermissionCreateCard, PermissionReadCard}

// DefaultSeed is the tenant of the demo and of most tests:
//
//   - tenant "default", OAuth client "cardbridge"/"sandbox-client-secret",
//     admin "mifos"/"password" (user 1, role 1 "Super user");
//   - office 1 "Head Office";
//   - roles 1 Super user, 2 Branch Manager, 3 Teller, 4 Read Only,
//     5 Self Service User (isSelfService);
//   - clients 1 "Acme Corporation" and 2 "Globex Ltd" (active entities) and
//     3 "Initech Inc" (not active), with savings accounts 1, 2 and 3 in USD;
//   - card products 1 "Virtual Debit Card" (active, virtual, DEBIT, VISA,
//     USD), 2 "Legacy Virtual Debit Card" (inactive) and 3 "Physical Debit
//     Card" (active, not virtual).
func DefaultSeed() Seed {
	return Seed{
		TenantID:    DefaultTenantID,
		OAuthClient: OAuthClient{ID: DefaultOAuthClientID, Secret: secret.New(DefaultOAuthClientSecret)},
		Admin: SeedUser{
			Username: DefaultAdminUsername, Password: secret.New(DefaultAdminPassword),
			Firstname: "App", Lastname: "Administrator", Email: "admin@sandbox.invalid",
			OfficeID: 1, Roles: []int64{1},
		},
		Offices: []Office{{ID: 1, Name: "Head Office"}},
		Roles: []Role{
			{ID: 1, Name: "Super user", Description: "This role provides all application permissions.", Permissions: []string{PermissionAll}},
			{ID: 2, Name: "Branch Manager", Description: "Manages a branch.", Permissions: []string{PermissionReadClient, PermissionReadUser, PermissionReadRole, PermissionReadCard, PermissionReadCardProduct}},
			{ID: 3, Name: "Teller", Description: "Cash desk.", Permissions: []string{PermissionReadClient}},
			{ID: 4, Name: "Read Only", Description: "Reads everything.", Permissions: []string{PermissionReadClient, PermissionReadUser, PermissionReadRole, PermissionReadCard, PermissionReadCardProduct}},
			{ID: DefaultSelfServiceRoleID, Name: "Self Service User", Description: "Role for self-service users.", IsSelfService: true, Permissions: SelfServicePermissions},
		},
		Clients: []Client{
			{ID: 1, AccountNo: "000000001", DisplayName: "Acme Corporation", Active: true, OfficeID: 1, LegalForm: 2},
			{ID: 2, AccountNo: "000000002", DisplayName: "Globex Ltd", Active: true, OfficeID: 1, LegalForm: 2},
			{ID: 3, AccountNo: "000000003", DisplayName: "Initech Inc", Active: false, OfficeID: 1, LegalForm: 2},
		},
		SavingsAccounts: []SavingsAccount{
			{ID: 1, AccountNo: "000000101", ClientID: 1, CurrencyCode: "USD", Active: true},
			{ID: 2, AccountNo: "000000102", ClientID: 2, CurrencyCode: "USD", Active: true},
			{ID: 3, AccountNo: "000000103", ClientID: 3, CurrencyCode: "USD", Active: true},
		},
		CardProducts: []CardProduct{
			{ID: 1, Name: "Virtual Debit Card", Active: true, CardType: "DEBIT", Virtual: true, Network: "VISA", CurrencyCode: "USD"},
			{ID: 2, Name: "Legacy Virtual Debit Card", Active: false, CardType: "DEBIT", Virtual: true, Network: "VISA", CurrencyCode: "USD"},
			{ID: 3, Name: "Physical Debit Card", Active: true, CardType: "DEBIT", Virtual: false, Network: "VISA", CurrencyCode: "USD"},
		},
	}
}

// LoadSeed reads a Seed from a JSON file (the field names of Seed; secrets
// as plain strings) and validates it. Unknown fields are refused, so that a
// typo does not silently fall back to a zero value.
func LoadSeed(path string) (Seed, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Seed{}, fmt.Errorf("loading sandbox seed: %w", err)
	}
	var s Seed
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Seed{}, fmt.Errorf("loading sandbox seed %s: %w", path, err)
	}
	if err := s.Validate(); err != nil {
		return Seed{}, fmt.Errorf("loading sandbox seed %s: %w", path, err)
	}
	return s, nil
}

// Validate checks that ids are unique and positive and that every reference
// points to something in the seed. Its error names every problem.
func (s Seed) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.TenantID == "" {
		bad("tenantId is required")
	}
	if s.OAuthClient.ID == "" || s.OAuthClient.Secret.IsZero() {
		bad("oauthClient.id and oauthClient.secret are required")
	}
	offices := map[int64]bool{}
	for _, o := range s.Offices {
		if o.ID <= 0 || offices[o.ID] {
			bad("office id %d is not positive or not unique", o.ID)
		}
		offices[o.ID] = true
	}
	roles := map[int64]bool{}
	for _, r := range s.Roles {
		if r.ID <= 0 || roles[r.ID] {
			bad("role id %d is not positive or not unique", r.ID)
		}
		roles[r.ID] = true
	}
	clients := map[int64]bool{}
	for _, c := range s.Clients {
		if c.ID <= 0 || clients[c.ID] {
			bad("client id %d is not positive or not unique", c.ID)
		}
		if !offices[c.OfficeID] {
			bad("client %d: office %d does not exist", c.ID, c.OfficeID)
		}
		if c.LegalForm != 1 && c.LegalForm != 2 {
			bad("client %d: legalForm must be 1 (person) or 2 (entity)", c.ID)
		}
		clients[c.ID] = true
	}
	accounts := map[int64]bool{}
	for _, a := range s.SavingsAccounts {
		if a.ID <= 0 || accounts[a.ID] {
			bad("savings account id %d is not positive or not unique", a.ID)
		}
		if !clients[a.ClientID] {
			bad("savings account %d: client %d does not exist", a.ID, a.ClientID)
		}
		accounts[a.ID] = true
	}
	products := map[int64]bool{}
	for _, p := range s.CardProducts {
		if p.ID <= 0 || products[p.ID] {
			bad("card product id %d is not positive or not unique", p.ID)
		}
		products[p.ID] = true
	}
	usernames := map[string]bool{}
	for i, u := range append([]SeedUser{s.Admin}, s.Users...) {
		name := "admin"
		if i > 0 {
			name = fmt.Sprintf("users[%d]", i-1)
		}
		if u.Username == "" || u.Password.IsZero() {
			bad("%s: username and password are required", name)
		}
		if usernames[u.Username] {
			bad("%s: username %q is not unique", name, u.Username)
		}
		usernames[u.Username] = true
		if !offices[u.OfficeID] {
			bad("%s: office %d does not exist", name, u.OfficeID)
		}
		if len(u.Roles) == 0 {
			bad("%s: roles are required", name)
		}
		for _, r := range u.Roles {
			if !roles[r] {
				bad("%s: role %d does not exist", name, r)
			}
		}
		for _, c := range u.Clients {
			if !clients[c] {
				bad("%s: client %d does not exist", name, c)
			}
		}
	}
	if s.Admin.IsSelfServiceUser {
		bad("admin must not be a self-service user")
	}
	return errors.Join(errs...)
}
