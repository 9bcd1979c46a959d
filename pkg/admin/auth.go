package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/pkg/internal/errtext"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// AdminTokenPrefix starts every admin token LoadOrCreateAdminToken makes,
// so people and secret scanners recognise one.
const AdminTokenPrefix = "tgadm_"

// secret is the admin token, kept as its SHA-256 so that comparing takes
// the same time whatever the presented token's length or content.
type secret struct{ sum [sha256.Size]byte }

func newSecret(token string) *secret { return &secret{sum: sha256.Sum256([]byte(token))} }

func (s *secret) matches(token string) bool {
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(s.sum[:], sum[:]) == 1
}

// principal is who a bearer token speaks for: the admin, or one account.
type principal struct {
	admin   bool
	account string
}

// authenticate resolves a bearer token. Its errors never quote the token.
func (s *Service) authenticate(token string) (principal, error) {
	switch {
	case token == "":
		return principal{}, status.Error(codes.Unauthenticated, "no bearer token: send the admin token (or, for usage, a gateway token) as Authorization: Bearer TOKEN")
	case s.admin != nil && s.admin.matches(token):
		return principal{admin: true}, nil
	case s.cfg.Verifier != nil && strings.HasPrefix(token, "tg1."):
		c, err := s.cfg.Verifier.Verify(token, s.now())
		if err != nil {
			return principal{}, status.Errorf(codes.Unauthenticated, "gateway token refused: %v", err)
		}
		return principal{account: c.Account}, nil
	}
	return principal{}, status.Error(codes.Unauthenticated, "the bearer token is neither the admin token nor a valid gateway token")
}

// authorize decides whether p may call method with req. A gateway token
// reads its own account's usage and nothing else; GetUsage without an
// account means the token's own.
func authorize(p principal, method string, req any) error {
	if p.admin {
		return nil
	}
	if method == pb.UsageService_GetUsage_FullMethodName {
		r, ok := req.(*pb.GetUsageRequest)
		if !ok {
			return status.Errorf(codes.Internal, "%s: unexpected request type %T", method, req)
		}
		switch r.GetAccount() {
		case "":
			r.Account = p.account
			return nil
		case p.account:
			return nil
		}
		return status.Errorf(codes.PermissionDenied, "a gateway token of account %s reads only that account's usage, not %s's", errtext.Quote(p.account), errtext.Quote(r.GetAccount()))
	}
	return status.Errorf(codes.PermissionDenied, "%s needs the admin token", method)
}

// guard authenticates token and authorizes the call: what both transports
// do before every method.
func (s *Service) guard(token, method string, req any) error {
	p, err := s.authenticate(token)
	if err != nil {
		return err
	}
	return authorize(p, method, req)
}

// bearer extracts the token from an Authorization header value.
func bearer(header string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// LoadOrCreateAdminToken returns the admin token kept in path, creating a
// random one (readable by the owner only) if the file does not exist, so a
// dev gateway's admin API is protected with no setup.
func LoadOrCreateAdminToken(path string) (string, error) {
	tok, err := LoadAdminToken(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok = AdminTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	// Written aside then linked into place: when two processes start on a
	// new data dir together, one link wins and the other reads its token,
	// never a half-written file.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".admin-token-*")
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(tok + "\n"); err != nil {
		tmp.Close()
		return "", fmt.Errorf("admin token: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return LoadAdminToken(path)
	} else if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}

// LoadAdminToken reads the admin token from path (surrounding space
// trimmed). An empty file is an error: it would let anyone in; so is a
// token CheckAdminToken refuses.
func LoadAdminToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token: %s is empty", path)
	}
	if err := CheckAdminToken(tok); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return tok, nil
}

// MinAdminTokenLen is the shortest admin token accepted. The admin API
// answers every guess and limits none, so a short token someone typed in
// ("admin", "changeme") is found by trying; the ones made here have 49
// characters.
const MinAdminTokenLen = 24

// CheckAdminToken refuses an admin token too short to withstand guessing.
// Its error never quotes the token.
func CheckAdminToken(token string) error {
	if len(token) < MinAdminTokenLen {
		return fmt.Errorf("the admin token has %d characters, want at least %d: use a random one, such as the output of `openssl rand -hex 24`", len(token), MinAdminTokenLen)
	}
	return nil
}
