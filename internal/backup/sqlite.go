package backup

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	_ "github.com/mattn/go-sqlite3" // driver "sqlite3"
)

// snapshotDB copies a live SQLite database to dst with VACUUM INTO: one read
// transaction, so the copy is consistent while the daemon keeps writing
// (copying the file under a WAL writer could tear it).
func snapshotDB(ctx context.Context, src, dst string) error {
	// mode=ro: never create or migrate the source; the busy timeout rides
	// out a writer's checkpoint.
	dsn := "file:" + (&url.URL{Path: src}).EscapedPath() + "?mode=ro&_busy_timeout=10000"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", dst); err != nil {
		return fmt.Errorf("snapshot %s: %w", src, err)
	}
	return nil
}
