package filetransfer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

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
// included) with a download URL from the store valid for WithLinkTTL
// (DefaultLinkTTL, an hour, by default), and the days
// that have no complete export. Mount it on a pattern with a {dataset}
// wildcard (mux.Handle("GET /exports/{dataset}", h)) or anywhere else: without
// the wildcard the dataset is the last path segment.
//
// Bad input is answered with 400 and a JSON {"error": ...}: a dataset name
// that is not a plain identifier, a missing (unbounded), malformed or
// reversed range, a range longer than WithMaxDays. A dataset outside
// WithDatasets, when given, is 404. A store failure is 502 (and logged, see
// WithLogger). Give it the WithPrefix the Exporter writes with. It does no
// I/O; a nil store or an option it cannot use is an error wrapping
// ErrInvalidOption.
func NewLinksHandler(store Store, opts ...LinksOption) (http.Handler, error) {
	if store == nil {
		return nil, invalid("NewLinksHandler: store is nil")
	}
	cfg, err := newLinksConfig(opts)
	if err != nil {
		return nil, err
	}
	h := &linksHandler{store: store, cfg: cfg, layout: Layout{Prefix: cfg.prefix}}
	if len(cfg.datasets) > 0 {
		h.allowed = map[string]bool{}
		for _, d := range cfg.datasets {
			h.allowed[d] = true
		}
	}
	return h, nil
}

type linksHandler struct {
	store   Store
	cfg     linksConfig
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
	if err := validateName(dataset); err != nil {
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
	days, err := Days(from, to, h.cfg.maxDays)
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
	sem := make(chan struct{}, h.cfg.concurrency)
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
			u, exp, err := h.store.URL(ctx, df.Key, h.cfg.ttl)
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
			h.cfg.logger.ErrorContext(ctx, "filetransfer: links: store failed", "dataset", dataset, "day", days[i].String(), "error", s.err)
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
