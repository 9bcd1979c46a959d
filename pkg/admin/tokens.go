package admin

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// MaxTokenTTL bounds a minted token's lifetime: long-lived tokens are what
// revocation is for, but one that outlives every key rotation is a
// mistake.
const MaxTokenTTL = 5 * 365 * 24 * time.Hour

// MintToken implements pb.TokenServiceServer. The token bills the
// project's account, read from the store: a caller cannot mint a token
// that names an account the project does not belong to.
func (s *Service) MintToken(ctx context.Context, req *pb.MintTokenRequest) (*pb.MintTokenResponse, error) {
	if s.cfg.Signer == nil {
		return nil, status.Error(codes.Unimplemented, "mint token: this server holds no signing key")
	}
	ttl := DefaultTokenTTL
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil {
			return nil, invalid("ttl: %v", err)
		}
		ttl = req.GetTtl().AsDuration()
	}
	if ttl < time.Second || ttl > MaxTokenTTL {
		return nil, invalid("ttl %v: want from 1s to %v", ttl, MaxTokenTTL)
	}
	if req.GetProject() == "" {
		return nil, invalid("mint token: name the project")
	}
	p, err := s.cfg.Store.GetProject(ctx, req.GetProject())
	if err != nil {
		return nil, s.storeError("mint token", err)
	}
	tok, err := s.cfg.Signer.Mint(auth.Claims{Account: p.Account, Project: p.ID, ExpiresAt: s.now().Add(ttl)})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "mint token: %v", err)
	}
	c, err := auth.Parse(tok)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "mint token: reading back the new token: %v", err)
	}
	return &pb.MintTokenResponse{
		Token: tok, TokenId: c.TokenID, Account: c.Account, Project: c.Project,
		ExpireTime: timestamppb.New(c.ExpiresAt),
	}, nil
}

// RevokeToken implements pb.TokenServiceServer.
func (s *Service) RevokeToken(ctx context.Context, req *pb.RevokeTokenRequest) (*pb.RevokeTokenResponse, error) {
	if s.cfg.Revoker == nil {
		return nil, status.Error(codes.Unimplemented, "revoke token: this server keeps no revocation list")
	}
	// By id alone the token's expiry is unknown: no token minted here
	// outlives MaxTokenTTL from now.
	id, expires := req.GetTokenId(), s.now().Add(MaxTokenTTL)
	switch {
	case id != "" && req.GetToken() != "":
		return nil, invalid("revoke token: give token_id or token, not both")
	case req.GetToken() != "":
		c, err := auth.Parse(req.GetToken())
		if err != nil {
			return nil, invalid("revoke token: %v", err) // auth's errors never quote the token
		}
		id, expires = c.TokenID, c.ExpiresAt
	}
	if err := checkTokenID(id); err != nil {
		return nil, invalid("revoke token: %v", err)
	}
	if err := s.cfg.Revoker.RevokeToken(ctx, id, expires); err != nil {
		s.log.Error("admin: revoke token", "error", err)
		return nil, status.Error(codes.Internal, "revoke token: the revocation list could not be written (see the server log)")
	}
	return &pb.RevokeTokenResponse{TokenId: id}, nil
}

// checkTokenID refuses what cannot be a token id: ids are hex (base64url
// in older releases), at most 64 bytes. That keeps a revocation list line
// one id (no newline, no leading '#'), and keeps a provider key pasted
// where an id belongs (sk-…, AIza…) out of the list, which is kept for
// years. The messages never repeat the id: it may be such a key.
func checkTokenID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("no token id given")
	case len(id) > maxTokenID:
		return fmt.Errorf("a token id is at most %d characters; give the token itself or its id from `tollgate token inspect`", maxTokenID)
	case strings.HasPrefix(id, "sk-") || strings.HasPrefix(id, "AIza"):
		return fmt.Errorf("that looks like a provider key, not a token id; nothing was revoked")
	}
	if !auth.URLSafe(id) {
		return fmt.Errorf("a token id has only letters, digits, '-' and '_' (a space, control character or other sign is not one)")
	}
	return nil
}

// maxTokenID bounds a token id: ids minted here are 22 (base64url) or 32
// (hex) characters.
const maxTokenID = 64

// RevocationFile is the revocation list auth.FileRevocations reads, one
// token id a line: gateways on the same data dir refuse a token within a
// second of its id being appended. The ledger's list (a *ledger.DB as the
// Revoker) reaches every replica; the file only those on its data dir.
type RevocationFile string

// RevokeToken appends tokenID to the file, creating it if needed. The file
// keeps no expiry: its lines stay until an operator removes them.
func (f RevocationFile) RevokeToken(_ context.Context, tokenID string, _ time.Time) error {
	if err := checkTokenID(tokenID); err != nil {
		return err
	}
	// O_APPEND: several processes may revoke at once, and a line this
	// short is written in one piece.
	w, err := os.OpenFile(string(f), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("revocation list: %w", err)
	}
	if _, err := w.WriteString(tokenID + "\n"); err != nil {
		w.Close()
		return fmt.Errorf("revocation list %s: %w", string(f), err)
	}
	if err := w.Sync(); err != nil {
		w.Close()
		return fmt.Errorf("revocation list %s: %w", string(f), err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("revocation list %s: %w", string(f), err)
	}
	return nil
}
