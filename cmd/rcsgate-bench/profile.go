package main

// --cpuprofile: CPU profiles of rcsgate, the agent and this process, one
// per media leg, so a slow leg can be read function by function (go tool
// pprof). rcsgate and the agent profile themselves when RCSGATE_CPUPROFILE
// names a directory (internal/cpuprof); this process tells them where a leg
// starts and ends with cpuprof.RotateSignal.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/rcsgate/rcsgate/internal/cpuprof"
)

// profiler cuts one profile per leg; a nil *profiler does nothing.
type profiler struct {
	dir   string
	procs map[string]int // program name → pid
	n     int            // the children's current profile number
	self  *os.File
	Files map[string][]string // leg → its profiles
}

// profileChildren makes the processes started after it profile themselves
// into dir.
func profileChildren(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", err
	}
	return abs, os.Setenv(cpuprof.EnvVar, abs)
}

// rotate ends every child's current profile and starts the next.
func (p *profiler) rotate() error {
	for name, pid := range p.procs {
		if err := syscall.Kill(pid, cpuprof.RotateSignal); err != nil {
			return fmt.Errorf("profile %s: %w", name, err)
		}
	}
	p.n++
	return nil
}

// start begins leg's profiles.
func (p *profiler) start(leg string) error {
	if p == nil {
		return nil
	}
	if err := p.rotate(); err != nil {
		return err
	}
	self := filepath.Join(p.dir, "bench-"+leg+".pprof")
	f, err := os.Create(self)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	p.self = f
	files := []string{self}
	for name, pid := range p.procs {
		files = append(files, cpuprof.Path(p.dir, name, pid, p.n))
	}
	if p.Files == nil {
		p.Files = map[string][]string{}
	}
	p.Files[leg] = files
	return nil
}

// stop ends leg's profiles (the children's are written out within
// moments of the signal).
func (p *profiler) stop() error {
	if p == nil || p.self == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.self.Close()
	p.self = nil
	if rerr := p.rotate(); err == nil {
		err = rerr
	}
	return err
}
