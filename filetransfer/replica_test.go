package filetransfer_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/internal/testenv"
)

// The Exporter runs against a streaming replica through anything with
// Acquire (here a pool on the replica; a shareddb reader fits the same
// interface), incremental mode included (its repeatable-read, read-only
// snapshot is allowed on a hot standby), and writes what the primary would.
func TestExportFromReplica(t *testing.T) {
	d := newDB(t, 2)
	table := d.createEvents(t)
	replicaURL := testenv.WithSearchPath(testenv.ReplicaDatabaseURL(t), d.schema)
	replica, err := pgxpool.New(context.Background(), replicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	testenv.Eventually(t, 15*time.Second, "the replica has the 10 rows", func() bool {
		var n int
		err := replica.QueryRow(tctx(t), "select count(*) from "+table).Scan(&n)
		return err == nil && n == 10
	})
	ds := filetransfer.Dataset{Name: "events", Query: "select * from " + table + " order by id", DayColumn: "day", UpdatedColumn: "updated_at"}
	fromPrimary, fromReplica := newMemory(t), newMemory(t)
	mp, err := newExporter(t, d, fromPrimary).Export(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-03"))
	if err != nil {
		t.Fatal(err)
	}
	er, err := filetransfer.NewExporter(replica, fromReplica)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := er.ExportChanged(tctx(t), ds, day(t, "2024-01-01"), day(t, "2024-01-03"))
	if err != nil {
		t.Fatal(err)
	}
	if len(mr.Files) != 3 {
		t.Fatalf("replica export wrote %d files, want 3", len(mr.Files))
	}
	for i := range mp.Files {
		if a, b := read(t, fromPrimary, mp.Files[i].Key), read(t, fromReplica, mr.Files[i].Key); !bytes.Equal(a, b) {
			t.Errorf("%s differs between primary and replica", mp.Files[i].Day)
		}
	}
}
