package linksign_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-integration/patterns/filetransfer/internal/linksign"
	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
)

func open(_ context.Context, key string) (io.ReadCloser, error) {
	if key != "a/a.csv" {
		return nil, storeutil.ErrNotFound
	}
	return io.NopCloser(strings.NewReader("id\n1\n")), nil
}

// A link works until its expiry and is refused (403, "expired") from then
// on. The bubble's fake clock moves past the expiry without waiting, so no
// store needs a clock hook.
func TestLinkExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := linksign.New("https://files.example.com/dl/", []byte("0123456789abcdef"))
		if err != nil {
			t.Fatal(err)
		}
		link, exp, err := s.Sign("a/a.csv", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		get := func() (int, string) {
			rec := httptest.NewRecorder()
			s.Handler(open).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, link, nil))
			return rec.Code, rec.Body.String()
		}
		time.Sleep(time.Until(exp) - time.Second)
		if code, body := get(); code != http.StatusOK || body != "id\n1\n" {
			t.Fatalf("a second before expiry: %d %q", code, body)
		}
		time.Sleep(time.Second)
		if code, body := get(); code != http.StatusForbidden || !strings.Contains(body, "expired") {
			t.Fatalf("at expiry: %d %q, want 403 expired", code, body)
		}
		u, _ := url.Parse(link)
		if err := s.Verify("a/a.csv", u.Query()); !errors.Is(err, linksign.ErrExpired) {
			t.Fatalf("Verify at expiry = %v, want ErrExpired", err)
		}
	})
}

func TestSettings(t *testing.T) {
	var s linksign.Settings
	for _, bad := range []string{"", "/dl/", "ftp://x/", "https://"} {
		if err := linksign.SetBaseURL(bad)(&s); err == nil || !strings.Contains(err.Error(), "WithBaseURL") {
			t.Errorf("SetBaseURL(%q) = %v, want an error naming WithBaseURL", bad, err)
		}
	}
	secret := []byte("0123456789abcdef")
	if err := linksign.SetSecret(secret)(&s); err != nil {
		t.Fatal(err)
	}
	secret[0] = 'X'
	if s.Secret[0] != '0' {
		t.Error("the secret was not copied")
	}
	if err := linksign.SetSecret(secret[:15])(&s); err == nil {
		t.Error("a 15-byte secret was accepted")
	}
}
