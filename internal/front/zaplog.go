package front

import (
	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger bridges certmagic's zap logging into zerolog, one level
// quieter: certmagic narrates every step at info and worries at warn about
// things that are routine here (no OCSP responder, ARI windows), so its
// info goes to debug, warn to info, error to warn. The decisive events
// (obtained, renewed, failed) are logged by us from certmagic's OnEvent at
// info and error. Nothing reaches stdout or stderr.
func newZapLogger(log zerolog.Logger) *zap.Logger {
	return zap.New(&zapCore{log: log.With().Str("component", "certmagic").Logger()})
}

type zapCore struct {
	log    zerolog.Logger
	fields []zapcore.Field
}

func zerologLevel(l zapcore.Level) zerolog.Level {
	switch {
	case l < zapcore.InfoLevel:
		return zerolog.TraceLevel
	case l == zapcore.InfoLevel:
		return zerolog.DebugLevel
	case l == zapcore.WarnLevel:
		return zerolog.InfoLevel
	case l == zapcore.ErrorLevel:
		return zerolog.WarnLevel
	default:
		return zerolog.ErrorLevel
	}
}

func (c *zapCore) Enabled(l zapcore.Level) bool {
	e := c.log.WithLevel(zerologLevel(l))
	if e == nil {
		return false
	}
	e.Discard()
	return true
}

func (c *zapCore) With(fields []zapcore.Field) zapcore.Core {
	all := make([]zapcore.Field, 0, len(c.fields)+len(fields))
	all = append(append(all, c.fields...), fields...)
	return &zapCore{log: c.log, fields: all}
}

func (c *zapCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *zapCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	e := c.log.WithLevel(zerologLevel(ent.Level))
	if e == nil {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	if ent.LoggerName != "" {
		e = e.Str("logger", ent.LoggerName)
	}
	e.Fields(enc.Fields).Msg(ent.Message)
	return nil
}

func (c *zapCore) Sync() error { return nil }
