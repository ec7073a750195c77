package smsgateway

import (
	"encoding/hex"
	"strconv"
	"time"
)

func strconvUnix(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
func hexs(b []byte) string           { return hex.EncodeToString(b) }
func b36(t time.Time) string         { return strconv.FormatInt(t.UnixMilli(), 36) }
