package s3_test

import (
	"testing"

	"github.com/go-integration/patterns/filetransfer"
	fts3 "github.com/go-integration/patterns/filetransfer/s3"
	"github.com/go-integration/patterns/filetransfer/storetest"
	"github.com/go-integration/patterns/internal/testenv/s3env"
)

func newStore(t testing.TB, env *s3env.Env) *fts3.Store {
	t.Helper()
	s, err := fts3.New(env.Client, env.Bucket, fts3.WithPartSize(fts3.MinPartSize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Features: storetest.Features{Check: true},
		New: func(t *testing.T) filetransfer.Store {
			env := s3env.New(t)
			s := newStore(t, env)
			t.Cleanup(func() {
				if ups := env.Uploads(t); len(ups) > 0 {
					t.Errorf("%d multipart uploads left behind", len(ups))
				}
			})
			return s
		},
	})
}
