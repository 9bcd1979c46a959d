// Package adminapi is the injector's client of the processor's admin API
// (pkg/admin, JSON over HTTP): whether an account has AI features enabled,
// and minting and revoking the gateway tokens the controller keeps in each
// namespace. The processor holds the signing key and the ledger, so the
// token it mints is scoped to the project's real account.
package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// ErrNotFound is returned when the account or project does not exist.
var ErrNotFound = errors.New("adminapi: not found")

// maxResponse bounds a response body; the admin API's answers are small.
const maxResponse = 1 << 20

// Client calls the admin API with the admin token.
type Client struct {
	base  *url.URL
	token string // never logged, never in an error
	http  *http.Client
}

// New returns a client of the admin API at baseURL (e.g.
// http://tollgate-admin.tollgate-system.svc:8081). hc nil uses a client
// with a 10 s timeout.
func New(baseURL, adminToken string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("adminapi: base URL %q: want an absolute http(s) URL", baseURL)
	}
	if adminToken == "" {
		return nil, errors.New("adminapi: an admin token is required")
	}
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{base: u, token: adminToken, http: hc}, nil
}

// AccountEnabled reports whether the account's AI features are enabled
// (GET /v1/accounts/{id}).
func (c *Client) AccountEnabled(ctx context.Context, account string) (bool, error) {
	var resp pb.GetAccountResponse
	if err := c.call(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(account), nil, &resp); err != nil {
		return false, fmt.Errorf("adminapi: account %q: %w", account, err)
	}
	if resp.GetAccount().GetId() != account {
		return false, fmt.Errorf("adminapi: account %q: the answer is about %q", account, resp.GetAccount().GetId())
	}
	return resp.GetAccount().GetEnabled(), nil
}

// Token is a minted gateway token. Token is the secret.
type Token struct {
	Token, ID, Account, Project string
	Expires                     time.Time
}

// MintToken mints a token for project, valid for ttl (POST /v1/tokens).
func (c *Client) MintToken(ctx context.Context, project string, ttl time.Duration) (Token, error) {
	var resp pb.MintTokenResponse
	req := &pb.MintTokenRequest{Project: project, Ttl: durationpb.New(ttl)}
	if err := c.call(ctx, http.MethodPost, "/v1/tokens", req, &resp); err != nil {
		return Token{}, fmt.Errorf("adminapi: mint a token for project %q: %w", project, err)
	}
	if resp.GetToken() == "" || resp.GetTokenId() == "" || resp.GetExpireTime() == nil {
		return Token{}, fmt.Errorf("adminapi: mint a token for project %q: incomplete answer", project)
	}
	return Token{
		Token: resp.GetToken(), ID: resp.GetTokenId(), Account: resp.GetAccount(), Project: resp.GetProject(),
		Expires: resp.GetExpireTime().AsTime(),
	}, nil
}

// RevokeToken revokes a token by id (POST /v1/tokens:revoke).
func (c *Client) RevokeToken(ctx context.Context, tokenID string) error {
	var resp pb.RevokeTokenResponse
	if err := c.call(ctx, http.MethodPost, "/v1/tokens:revoke", &pb.RevokeTokenRequest{TokenId: tokenID}, &resp); err != nil {
		return fmt.Errorf("adminapi: revoke token %s: %w", tokenID, err)
	}
	return nil
}

// call sends req (nil: no body) and decodes the answer into resp.
func (c *Client) call(ctx context.Context, method, path string, req, resp proto.Message) error {
	var body io.Reader
	if req != nil {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(req)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := *c.base
	u.Path += path
	hr, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	hr.Header.Set("Authorization", "Bearer "+c.token)
	hr.Header.Set("Accept", "application/json")
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	r, err := c.http.Do(hr)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if r.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		err := fmt.Errorf("HTTP %d: %s", r.StatusCode, e.Error.Message)
		if r.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %s", ErrNotFound, e.Error.Message)
		}
		return err
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, resp); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	return nil
}

// AccountSource answers whether an account is enabled.
type AccountSource interface {
	AccountEnabled(ctx context.Context, account string) (bool, error)
}

// AccountCache remembers answers for TTL, so admission (one lookup per pod)
// and the controller's resyncs do not each cost a round trip. When the
// source fails, the last answer, however old, is used: accounts change
// state rarely and a brief admin API outage should change nothing. With
// no answer ever, the error is returned and the caller decides (the
// webhook injects; the controller leaves the namespace as it is).
type AccountCache struct {
	src AccountSource
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]cached
}

type cached struct {
	enabled bool
	at      time.Time
}

// NewAccountCache caches src's answers for ttl.
func NewAccountCache(src AccountSource, ttl time.Duration) *AccountCache {
	return &AccountCache{src: src, ttl: ttl, now: time.Now, entries: map[string]cached{}}
}

// AccountEnabled implements AccountSource.
func (c *AccountCache) AccountEnabled(ctx context.Context, account string) (bool, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[account]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl {
		return e.enabled, nil
	}
	enabled, err := c.src.AccountEnabled(ctx, account)
	if err != nil {
		if ok {
			return e.enabled, nil
		}
		return false, err
	}
	c.mu.Lock()
	c.entries[account] = cached{enabled: enabled, at: now}
	c.mu.Unlock()
	return enabled, nil
}
