package collector

import (
	"context"
	"log/slog"

	"github.com/mnguard/mnguard/server/api"
	"github.com/mnguard/mnguard/server/bus"
	"github.com/mnguard/mnguard/server/store"
)

// startBus joins the collector to its replicas when the store is
// PostgreSQL: every push of this replica's hub is announced through
// LISTEN/NOTIFY and the others' are acted on here (bus.Postgres), until
// ctx ends. With SQLite there is one collector process, and pushes stay in
// it.
func startBus(ctx context.Context, st *store.DB, svc *api.Services, log *slog.Logger) {
	pool := st.Postgres()
	if pool == nil {
		return
	}
	b, err := bus.NewPostgresConfig(pool.Config().ConnConfig, log)
	if err != nil {
		// Only the random origin can fail; the pool's settings parsed.
		log.Error("replica bus not started: pushes reach only this replica's agents", "err", err)
		return
	}
	svc.SetBus(b)
	go func() { _ = b.Run(ctx, svc.BusHandler()) }()
	log.Info("replica bus started", "origin", b.Origin(), "channel", bus.Channel)
}
