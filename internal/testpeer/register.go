package testpeer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MatrixError is a non-2xx answer from a homeserver. Callers can use
// errors.As to inspect the status and errcode (e.g. M_USER_IN_USE).
type MatrixError struct {
	Method  string
	Path    string
	Status  int
	ErrCode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *MatrixError) Error() string {
	code := e.ErrCode
	if code == "" {
		code = "no errcode"
	}
	return fmt.Sprintf("%s %s: HTTP %d %s: %s", e.Method, e.Path, e.Status, code, e.Message)
}

const sharedSecretRegisterPath = "/_synapse/admin/v1/register"

// registerSharedSecret implements Synapse's shared-secret admin registration,
// which Dendrite also serves; both implementations reuse it.
func registerSharedSecret(ctx context.Context, client *http.Client, baseURL, secret, localpart, password string, admin bool) (Account, error) {
	var acct Account
	if strings.ContainsRune(localpart, 0) || strings.ContainsRune(password, 0) {
		// NUL is the HMAC field separator.
		return acct, fmt.Errorf("testpeer: register %q: localpart and password must not contain NUL", localpart)
	}
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := doJSON(ctx, client, http.MethodGet, baseURL, sharedSecretRegisterPath, nil, &nonce); err != nil {
		return acct, fmt.Errorf("testpeer: register %q: get nonce: %w", localpart, err)
	}
	if nonce.Nonce == "" {
		return acct, fmt.Errorf("testpeer: register %q: empty nonce", localpart)
	}

	role := "notadmin"
	if admin {
		role = "admin"
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + password + "\x00" + role))

	body := map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    admin,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	}
	if err := doJSON(ctx, client, http.MethodPost, baseURL, sharedSecretRegisterPath, body, &acct); err != nil {
		return acct, fmt.Errorf("testpeer: register %q: %w", localpart, err)
	}
	if acct.UserID == "" {
		return acct, fmt.Errorf("testpeer: register %q: response has no user_id", localpart)
	}
	return acct, nil
}

// doJSON sends an optional JSON body and decodes a JSON answer into out.
// Non-2xx answers become *MatrixError.
func doJSON(ctx context.Context, client *http.Client, method, baseURL, path string, in, out any) error {
	req, err := newJSONRequest(ctx, method, baseURL+path, "", in)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		merr := &MatrixError{Method: method, Path: path, Status: resp.StatusCode}
		if json.Unmarshal(raw, merr) != nil || (merr.ErrCode == "" && merr.Message == "") {
			merr.Message = strings.TrimSpace(string(raw))
		}
		return merr
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode response: %w", method, path, err)
		}
	}
	return nil
}

// maxAnswer bounds what is read of a homeserver's answer.
const maxAnswer = 1 << 20

// newJSONRequest builds a request with an optional JSON body and token.
func newJSONRequest(ctx context.Context, method, url, token string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

// decodeLimited decodes a bounded JSON body.
func decodeLimited(r io.Reader, out any) error {
	raw, err := io.ReadAll(io.LimitReader(r, maxAnswer))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}
