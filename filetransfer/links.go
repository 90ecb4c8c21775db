package filetransfer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// LinksConfig configures the links handler. The zero value is usable.
type LinksConfig struct {
	// Prefix is the Exporter's Config.Prefix. Default "".
	Prefix string
	// TTL is how long each link stays valid, at most MaxLinkTTL (7 days).
	// Default 1 hour.
	TTL time.Duration
	// MaxDays is the longest range one request may ask for. Default 366.
	MaxDays int
	// Datasets, when not empty, lists the only datasets served; others get 404.
	Datasets []string
	// Concurrency is how many day markers are read from the store at once.
	// Default 16.
	Concurrency int
}

// Links is the JSON body the links handler returns.
type Links struct {
	Dataset string     `json:"dataset"`
	From    Day        `json:"from"`
	To      Day        `json:"to"`
	Files   []LinkFile `json:"files"`
	// Missing lists the days in the range with no complete export.
	Missing []Day `json:"missing"`
}

// LinkFile is one day's download link.
type LinkFile struct {
	Day       Day       `json:"day"`
	URL       string    `json:"url"`
	Rows      int64     `json:"rows"`
	Bytes     int64     `json:"bytes"`
	SHA256    string    `json:"sha256"`
	Gzip      bool      `json:"gzip"`
	ExpiresAt time.Time `json:"expires_at"`
}

// NewLinksHandler returns an http.Handler for
//
//	GET /exports/{dataset}?from=YYYY-MM-DD&to=YYYY-MM-DD
//
// that answers with Links: one entry per exported day in the range (both ends
// included) with a download URL from the store valid for TTL, and the days
// that have no complete export. Mount it on a pattern with a {dataset}
// wildcard (mux.Handle("GET /exports/{dataset}", h)) or anywhere else: without
// the wildcard the dataset is the last path segment.
//
// Bad input is answered with 400 and a JSON {"error": ...}: a dataset name
// that is not a plain identifier, a missing (unbounded), malformed or
// reversed range, a range longer than MaxDays. A store failure is 502.
func NewLinksHandler(store Store, cfg LinksConfig) (http.Handler, error) {
	if store == nil {
		return nil, errors.New("filetransfer: NewLinksHandler needs a store")
	}
	if cfg.Prefix != "" {
		if err := ValidateKey(cfg.Prefix); err != nil {
			return nil, fmt.Errorf("filetransfer: LinksConfig.Prefix: %w", err)
		}
	}
	if cfg.TTL == 0 {
		cfg.TTL = time.Hour
	}
	if err := CheckTTL(cfg.TTL); err != nil {
		return nil, fmt.Errorf("filetransfer: LinksConfig.TTL: %w", err)
	}
	if cfg.MaxDays <= 0 {
		cfg.MaxDays = 366
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	h := &linksHandler{store: store, cfg: cfg, layout: Layout{Prefix: cfg.Prefix}}
	if len(cfg.Datasets) > 0 {
		h.allowed = map[string]bool{}
		for _, d := range cfg.Datasets {
			if err := ValidateName(d); err != nil {
				return nil, fmt.Errorf("filetransfer: LinksConfig.Datasets: %w", err)
			}
			h.allowed[d] = true
		}
	}
	return h, nil
}

type linksHandler struct {
	store   Store
	cfg     LinksConfig
	layout  Layout
	allowed map[string]bool
}

type httpError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *linksHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeJSON(w, http.StatusMethodNotAllowed, httpError{"method not allowed"})
		return
	}
	dataset := r.PathValue("dataset")
	if dataset == "" {
		p := strings.TrimSuffix(r.URL.Path, "/")
		dataset = p[strings.LastIndexByte(p, '/')+1:]
	}
	if err := ValidateName(dataset); err != nil {
		writeJSON(w, http.StatusBadRequest, httpError{err.Error()})
		return
	}
	if h.allowed != nil && !h.allowed[dataset] {
		writeJSON(w, http.StatusNotFound, httpError{fmt.Sprintf("unknown dataset %q", dataset)})
		return
	}
	q := r.URL.Query()
	var from, to Day
	for _, p := range []struct {
		name string
		d    *Day
	}{{"from", &from}, {"to", &to}} {
		v := q.Get(p.name)
		if v == "" {
			writeJSON(w, http.StatusBadRequest, httpError{fmt.Sprintf("%v: query parameter %q (YYYY-MM-DD) is required", ErrInvalidRange, p.name)})
			return
		}
		d, err := ParseDay(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, httpError{p.name + ": " + err.Error()})
			return
		}
		*p.d = d
	}
	days, err := Days(from, to, h.cfg.MaxDays)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, httpError{err.Error()})
		return
	}

	ctx := r.Context()
	type slot struct {
		f   LinkFile
		ok  bool
		err error
	}
	slots := make([]slot, len(days))
	sem := make(chan struct{}, h.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, day := range days {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			df, err := ReadDay(ctx, h.store, h.layout, dataset, day)
			if isNotFound(err) {
				return
			}
			if err != nil {
				slots[i].err = err
				return
			}
			u, exp, err := h.store.URL(ctx, df.Key, h.cfg.TTL)
			if err != nil {
				slots[i].err = err
				return
			}
			slots[i] = slot{ok: true, f: LinkFile{Day: day, URL: u, Rows: df.Rows, Bytes: df.Bytes, SHA256: df.SHA256, Gzip: df.Gzip, ExpiresAt: exp.UTC()}}
		})
	}
	wg.Wait()
	out := Links{Dataset: dataset, From: from, To: to, Files: []LinkFile{}, Missing: []Day{}}
	for i, s := range slots {
		switch {
		case s.err != nil:
			writeJSON(w, http.StatusBadGateway, httpError{fmt.Sprintf("store: %s: %v", days[i], s.err)})
			return
		case s.ok:
			out.Files = append(out.Files, s.f)
		default:
			out.Missing = append(out.Missing, days[i])
		}
	}
	writeJSON(w, http.StatusOK, out)
}
