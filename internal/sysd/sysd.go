// Package sysd is rcsgate's side of systemd: sockets handed over by socket
// units (FileDescriptorName=), sd_notify readiness, status and watchdog
// pings, and structured logging to journald. Every part is a no-op when the
// daemon was not started by systemd, so `rcsgate serve` from a shell behaves
// as before.
package sysd
