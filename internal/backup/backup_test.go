package backup

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/store"
)

func init() { scryptWorkFactor = 10 } // fast tests; decryption reads it from the header

// paired is a state directory made the way `rcsgate init` and a pairing do.
type paired struct {
	dir, cfg string
	devID    string
	devKey   any
}

func newPairedState(t *testing.T) paired {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	cfg, err := gateway.NewConfig(gateway.InitOptions{StateDir: dir, HomeserverURL: "http://127.0.0.1:8008", Domain: "example.org", Admin: "@admin:example.org"})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := cfg.Save(cfgPath); err != nil {
		t.Fatal(err)
	}
	reg, err := cfg.Registration()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "registration.yaml"), []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadOrCreateChannelCert(dir); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(dir, gateway.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, err := pki.NewDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	der, id, err := ca.SignCSR(csr, "pixel")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddDevice(ctx, store.Device{ID: id.String(), Name: "pixel", Owner: "@admin:example.org", CertDER: der}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutContact(ctx, "opaque1", "+12025550100"); err != nil {
		t.Fatal(err)
	}
	if err := st.Enqueue(ctx, id.String(), "$ev1", []byte(`{"text":"queued"}`)); err != nil {
		t.Fatal(err)
	}
	makeBridgeDB(t, filepath.Join(dir, gateway.BridgeFile))
	// What a running front keeps, and its lock (not state).
	for p, body := range map[string]string{"certmagic/certificates/acme/x/x.key": "k", "certmagic/locks/x.lock": "l"} {
		p = filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return paired{dir: dir, cfg: cfgPath, devID: id.String(), devKey: key}
}

func makeBridgeDB(t *testing.T, path string) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT);
		INSERT INTO a VALUES (1, 'portal'); INSERT INTO b VALUES (1, 'portal');`); err != nil {
		t.Fatal(err)
	}
}

// testPass is strong enough for PassphraseRecipient.
const testPass = "test passphrase, not a word 42"

func passRecipient(t *testing.T, pass string) []age.Recipient {
	r, err := PassphraseRecipient(pass)
	if err != nil {
		t.Fatal(err)
	}
	return []age.Recipient{r}
}

func passIdentity(t *testing.T, pass string) []age.Identity {
	id, err := PassphraseIdentity(pass)
	if err != nil {
		t.Fatal(err)
	}
	return []age.Identity{id}
}

func mustCreate(t *testing.T, o Options) *Result {
	t.Helper()
	if o.Log.GetLevel() == zerolog.TraceLevel {
		o.Log = zerolog.New(io.Discard)
	}
	res, err := Create(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// checkRestored asserts the restored dir can take over from the original:
// same keys, same device rows, device certificate valid under the CA.
func checkRestored(t *testing.T, orig paired, dir string) {
	t.Helper()
	ctx := context.Background()
	for _, f := range []string{pki.CAKeyFile, pki.CACertFile, pki.ChannelKeyFile, pki.ChannelCertFile, "registration.yaml"} {
		a, err := os.ReadFile(filepath.Join(orig.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs after restore", f)
		}
	}
	for f, want := range map[string]os.FileMode{pki.CAKeyFile: 0o600, pki.ChannelKeyFile: 0o600, pki.CACertFile: 0o644, gateway.StoreFile: 0o600, "config.yaml": 0o600, "certmagic": 0o700 | os.ModeDir, ".": 0o700 | os.ModeDir} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s mode %v, want %v", f, st.Mode(), want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "certmagic/certificates/acme/x/x.key")); err != nil {
		t.Error("certmagic storage not restored:", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "certmagic/locks")); err == nil {
		t.Error("certmagic locks restored")
	}
	cfg, err := gateway.LoadConfig(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != dir {
		t.Fatalf("restored config state_dir %q, want %q", cfg.StateDir, dir)
	}
	origCfg, _ := gateway.LoadConfig(orig.cfg)
	if cfg.Appservice.ASToken != origCfg.Appservice.ASToken || cfg.IDKey != origCfg.IDKey {
		t.Fatal("restored config lost its secrets")
	}
	ca, err := pki.LoadOrCreateCA(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, gateway.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := st.GetDevice(ctx, orig.devID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "pixel" || !d.Revoked.IsZero() {
		t.Fatalf("device row %+v", d)
	}
	cert, err := x509.ParseCertificate(d.CertDER)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal("device certificate does not verify against the restored CA:", err)
	}
	if n, err := st.QueueDepth(ctx, orig.devID); err != nil || n != 1 {
		t.Fatalf("queue depth %d, %v", n, err)
	}
	if num, err := st.Contact(ctx, "opaque1"); err != nil || num != "+12025550100" {
		t.Fatalf("contact %q, %v", num, err)
	}
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, gateway.BridgeFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRow(`SELECT v FROM a WHERE id = 1`).Scan(&v); err != nil || v != "portal" {
		t.Fatalf("bridge.db: %q, %v", v, err)
	}
}

func TestRoundTripPassphraseAndRecipient(t *testing.T) {
	ctx := context.Background()
	orig := newPairedState(t)
	backups := Dir{Path: filepath.Join(t.TempDir(), "backups")}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		rs   []age.Recipient
		ids  []age.Identity
	}{
		{"passphrase", passRecipient(t, "correct horse battery"), passIdentity(t, "correct horse battery")},
		{"recipient", []age.Recipient{id.Recipient()}, []age.Identity{id}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2025, 1, 2, 3, 4, 5+i, 0, time.UTC)
			res := mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: tc.rs, Dest: backups, Now: func() time.Time { return now }})
			if res.Name != "rcsgate-backup-20250102T03040"+fmt.Sprint(5+i)+"Z.tar.age" {
				t.Fatalf("name %s", res.Name)
			}
			if len(res.Skipped) != 0 {
				t.Fatalf("skipped %v", res.Skipped)
			}
			st, err := os.Stat(res.Location)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("archive %v %v", st, err)
			}
			dir := filepath.Join(t.TempDir(), "restored")
			rr, err := Restore(ctx, backups, res.Name, RestoreOptions{Identities: tc.ids, StateDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if !rr.StateDirRewritten {
				t.Error("state_dir not rewritten")
			}
			checkRestored(t, orig, dir)
			leftovers, _ := filepath.Glob(filepath.Join(dir, ".rcsgate-*"))
			if len(leftovers) > 0 {
				t.Fatalf("staging left behind: %v", leftovers)
			}
		})
	}
	// No temporary files in the destination, and the latest is found.
	ents, _ := os.ReadDir(backups.Path)
	if len(ents) != 2 {
		t.Fatalf("backups dir holds %d entries", len(ents))
	}
	_, name, err := ParseSource(ctx, backups.Path, S3Config{})
	if err != nil || name != "rcsgate-backup-20250102T030406Z.tar.age" {
		t.Fatalf("latest = %q, %v", name, err)
	}
	// An x25519 identity can't open the passphrase archive, and vice versa.
	_, err = Restore(ctx, backups, "rcsgate-backup-20250102T030405Z.tar.age", RestoreOptions{Identities: []age.Identity{id}, StateDir: filepath.Join(t.TempDir(), "x")})
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("identity on passphrase archive: %v", err)
	}
}

func TestWrongPassphrase(t *testing.T) {
	orig := newPairedState(t)
	backups := Dir{Path: t.TempDir()}
	res := mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: passRecipient(t, "the right passphrase 7"), Dest: backups})
	dir := filepath.Join(t.TempDir(), "restored")
	_, err := Restore(context.Background(), backups, res.Name, RestoreOptions{Identities: passIdentity(t, "wrong"), StateDir: dir})
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("got %v, want ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("unclear error %q", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a failed restore created the state dir")
	}
}

func TestTamperedArchiveWritesNothing(t *testing.T) {
	orig := newPairedState(t)
	backups := Dir{Path: t.TempDir()}
	res := mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: passRecipient(t, testPass), Dest: backups})
	raw, err := os.ReadFile(res.Location)
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"flipped byte": func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 0x40; return b },
		"truncated":    func(b []byte) []byte { return bytes.Clone(b[:len(b)-100]) },
		"cut at chunk": func(b []byte) []byte { return bytes.Clone(b[:len(b)*3/4]) },
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.tar.age")
			if err := os.WriteFile(p, mutate(raw), 0o600); err != nil {
				t.Fatal(err)
			}
			// Into an existing empty dir (--force not needed) that must stay empty.
			dir := t.TempDir()
			d, n, err := ParseSource(context.Background(), p, S3Config{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = Restore(context.Background(), d, n, RestoreOptions{Identities: passIdentity(t, testPass), StateDir: dir})
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("a failed restore left %v", ents)
			}
		})
	}
}

func TestRestoreRefusesNonEmptyWithoutForce(t *testing.T) {
	ctx := context.Background()
	orig := newPairedState(t)
	backups := Dir{Path: t.TempDir()}
	res := mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: passRecipient(t, testPass), Dest: backups})
	// A second, different state (new keys) in the target.
	other := newPairedState(t)
	_, err := Restore(ctx, backups, res.Name, RestoreOptions{Identities: passIdentity(t, testPass), StateDir: other.dir})
	if !errors.Is(err, ErrStateDirNotEmpty) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("got %v", err)
	}
	before, _ := os.ReadFile(filepath.Join(other.dir, pki.CAKeyFile))
	if bytes.Equal(before, mustRead(t, filepath.Join(orig.dir, pki.CAKeyFile))) {
		t.Fatal("refused restore touched the CA")
	}
	// A live WAL beside the old database must not survive into the new one.
	if err := os.WriteFile(filepath.Join(other.dir, gateway.StoreFile+"-wal"), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other.dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, backups, res.Name, RestoreOptions{Identities: passIdentity(t, testPass), StateDir: other.dir, Force: true}); err != nil {
		t.Fatal(err)
	}
	checkRestored(t, orig, other.dir)
	if _, err := os.Stat(filepath.Join(other.dir, gateway.StoreFile+"-wal")); err == nil {
		t.Fatal("stale WAL kept")
	}
	if string(mustRead(t, filepath.Join(other.dir, "notes.txt"))) != "mine" {
		t.Fatal("unrelated file touched")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestScryptCannotMix(t *testing.T) {
	orig := newPairedState(t)
	id, _ := age.GenerateX25519Identity()
	rs := append(passRecipient(t, testPass), id.Recipient())
	_, err := Create(context.Background(), Options{ConfigPath: orig.cfg, Recipients: rs, Dest: Dir{Path: t.TempDir()}, Log: zerolog.Nop()})
	if err == nil {
		t.Fatal("passphrase mixed with a recipient was accepted")
	}
}

func TestUnknownEntriesReported(t *testing.T) {
	orig := newPairedState(t)
	if err := os.WriteFile(filepath.Join(orig.dir, "stray.bin"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: passRecipient(t, testPass), Dest: Dir{Path: t.TempDir()}})
	if len(res.Skipped) != 1 || res.Skipped[0] != "stray.bin" {
		t.Fatalf("skipped %v", res.Skipped)
	}
}

func TestKeepPrunes(t *testing.T) {
	orig := newPairedState(t)
	backups := Dir{Path: t.TempDir()}
	// Not ours: never pruned.
	if err := os.WriteFile(filepath.Join(backups.Path, "other.tar.age"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 4 {
		now := time.Date(2025, 3, 1, 0, 0, i, 0, time.UTC)
		res := mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: passRecipient(t, testPass), Dest: backups, Keep: 2, Now: func() time.Time { return now }})
		names = append(names, res.Name)
		if i == 3 && len(res.Pruned) != 1 {
			t.Fatalf("pruned %v", res.Pruned)
		}
	}
	got, err := backups.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(names[2:], ",") {
		t.Fatalf("left %v, want %v", got, names[2:])
	}
	if _, err := os.Stat(filepath.Join(backups.Path, "other.tar.age")); err != nil {
		t.Fatal("pruned a foreign file")
	}
}

// A writer commits pairs of rows while the backup runs; the snapshot must
// hold whole transactions only.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	orig := newPairedState(t)
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(orig.dir, gateway.BridgeFile)+"?_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stop := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	var werr error
	commits := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 2; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tx, err := db.Begin()
			if err != nil {
				werr = err
				return
			}
			_, err1 := tx.Exec(`INSERT INTO a VALUES (?, ?)`, i, strings.Repeat("x", 512))
			_, err2 := tx.Exec(`INSERT INTO b VALUES (?, ?)`, i, strings.Repeat("y", 512))
			if err := errors.Join(err1, err2, tx.Commit()); err != nil {
				werr = err
				return
			}
			if commits++; commits == 50 {
				close(started)
			}
		}
	}()
	<-started
	backups := Dir{Path: t.TempDir()}
	res := mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: passRecipient(t, testPass), Dest: backups})
	close(stop)
	wg.Wait()
	if werr != nil {
		t.Fatal("writer failed during the backup:", werr)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(ctx, backups, res.Name, RestoreOptions{Identities: passIdentity(t, testPass), StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	rdb, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, gateway.BridgeFile))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	var ok string
	var na, nb int
	if err := rdb.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity %q %v", ok, err)
	}
	if err := rdb.QueryRow(`SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)`).Scan(&na, &nb); err != nil {
		t.Fatal(err)
	}
	if na != nb || na < 51 {
		t.Fatalf("snapshot holds %d rows in a and %d in b", na, nb)
	}
}

func TestS3RoundTrip(t *testing.T) {
	ctx := context.Background()
	backend := s3mem.New()
	if err := backend.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server()) // 127.0.0.1
	defer srv.Close()
	s3cfg := S3Config{Endpoint: srv.URL, Region: "us-east-1", AccessKey: "test", SecretKey: "testsecret"}

	orig := newPairedState(t)
	dest, err := ParseTarget("s3://backups/rcsgate/host1", s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	var last *Result
	for i := range 3 {
		now := time.Date(2025, 4, 1, 0, 0, i, 0, time.UTC)
		last = mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: passRecipient(t, testPass), Dest: dest, Keep: 2, Now: func() time.Time { return now }})
	}
	if last.Location != "s3://backups/rcsgate/host1/rcsgate-backup-20250401T000002Z.tar.age" {
		t.Fatalf("location %s", last.Location)
	}
	names, err := dest.List(ctx)
	if err != nil || len(names) != 2 {
		t.Fatalf("after --keep 2: %v %v", names, err)
	}
	// A prefix means its newest archive.
	src, name, err := ParseSource(ctx, "s3://backups/rcsgate/host1/", s3cfg)
	if err != nil || name != last.Name {
		t.Fatalf("latest %q %v", name, err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(ctx, src, name, RestoreOptions{Identities: passIdentity(t, testPass), StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	checkRestored(t, orig, dir)
	// And an explicit key.
	src, name, err = ParseSource(ctx, last.Location, s3cfg)
	if err != nil || name != last.Name {
		t.Fatalf("explicit %q %v", name, err)
	}
	if _, err := src.Open(ctx, "rcsgate-backup-20250401T000000Z.tar.age"); err == nil {
		t.Fatal("pruned archive still there")
	}
}

// An archive of several parts streams through and comes back whole.
func TestS3MultiPart(t *testing.T) {
	ctx := context.Background()
	defer func(old uint64) { s3PartSize = old }(s3PartSize)
	s3PartSize = 5 << 20
	backend := s3mem.New()
	if err := backend.CreateBucket("bkt"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer srv.Close()
	orig := newPairedState(t)
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(orig.dir, gateway.BridgeFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO a VALUES (2, randomblob(12 << 20))`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	parts := &partCounter{rt: http.DefaultTransport}
	dest, err := NewS3(S3Config{Endpoint: srv.URL, Region: "us-east-1", AccessKey: "a", SecretKey: "b", Transport: parts}, "bkt", "p")
	if err != nil {
		t.Fatal(err)
	}
	res := mustCreate(t, Options{ConfigPath: orig.cfg, Recipients: passRecipient(t, testPass), Dest: dest})
	if res.Bytes < 12<<20 || parts.n.Load() != 3 {
		t.Fatalf("archive of %d bytes went up in %d parts", res.Bytes, parts.n.Load())
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(ctx, dest, res.Name, RestoreOptions{Identities: passIdentity(t, testPass), StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	checkRestored(t, orig, dir)
}

type partCounter struct {
	rt http.RoundTripper
	n  atomic.Int32
}

func (p *partCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != "" {
		p.n.Add(1)
	}
	return p.rt.RoundTrip(r)
}

// A failed write leaves no object behind.
func TestS3FailedWriteLeavesNothing(t *testing.T) {
	ctx := context.Background()
	backend := s3mem.New()
	if err := backend.CreateBucket("bkt"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer srv.Close()
	d, err := NewS3(S3Config{Endpoint: srv.URL, Region: "us-east-1", AccessKey: "a", SecretKey: "b"}, "bkt", "")
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = d.Put(ctx, ArchiveName(time.Now()), func(w io.Writer) error {
		if _, err := w.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if names, err := d.List(ctx); err != nil || len(names) != 0 {
		t.Fatalf("left %v %v", names, err)
	}
}

func TestPassphraseStrength(t *testing.T) {
	tests := []struct {
		pass string
		ok   bool
	}{
		{"pw", false},
		{"tr0ub4dor&3", false},                 // 11 characters
		{"aaaaaaaaaaaaaaaaaaaa", false},        // one character
		{"123456789012345678", false},          // a sequence
		{"abcdefghijklmnop", false},            // a sequence
		{"abcabcabcabcabc", false},             // three characters
		{"Password2024!", false},               // a common password
		{"839201748362", false},                // digits: about 40 bits
		{"correct horse battery staple", true}, // four words
		{"correct horse battery", true},
		{"Zq7#mL2$wP9v", true},
		{"einhorn regenbogen fahrrad", true},
		{"mot de passe très long ici", true},
		{"password is not my passphrase here", true}, // long enough despite the word
	}
	for _, tc := range tests {
		err := CheckPassphrase(tc.pass)
		if (err == nil) != tc.ok {
			t.Errorf("CheckPassphrase(%q) = %v, want ok=%v", tc.pass, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrWeakPassphrase) || !strings.Contains(err.Error(), "--recipient")) {
			t.Errorf("CheckPassphrase(%q): unclear error %v", tc.pass, err)
		}
		if _, err := PassphraseRecipient(tc.pass); (err == nil) != tc.ok {
			t.Errorf("PassphraseRecipient(%q) = %v, want ok=%v", tc.pass, err, tc.ok)
		}
	}
	// Restoring is not checked: an archive opens with what it was made with.
	if _, err := PassphraseIdentity("pw"); err != nil {
		t.Fatalf("PassphraseIdentity refused an old weak passphrase: %v", err)
	}
}
