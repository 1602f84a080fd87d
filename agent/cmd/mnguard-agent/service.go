package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/kardianos/service"
	"github.com/mnguard/mnguard/agent/config"
)

// program adapts the agent to kardianos/service: Start launches it, Stop
// cancels its context and waits for a clean exit.
type program struct {
	parent context.Context
	run    func(context.Context) error
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

func (p *program) Start(service.Service) error {
	ctx, cancel := context.WithCancel(p.parent)
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		err := p.run(ctx)
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			// The agent cannot go on (not enrolled, state unreadable):
			// end the process so the service manager sees it and
			// restarts it later.
			fmt.Fprintf(os.Stderr, "mnguard-agent run: %v\n", err)
			os.Exit(1)
		}
	}()
	return nil
}

func (p *program) Stop(service.Service) error {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		return errors.New("agent did not stop within 20s")
	}
	return nil
}

func serviceConfig(cfg config.Config, configPath string) *service.Config {
	args := []string{"run", "--state-dir", cfg.StateDir}
	if p := absConfig(configPath); p != "" {
		args = append(args, "--config", p)
	}
	return &service.Config{
		Name:        cfg.ServiceName,
		DisplayName: "mnguard agent",
		Description: "Enforces the My Number segment's terminal policy and reports posture to the mnguard collector.",
		Arguments:   args,
		Option: service.KeyValue{
			"Restart":           "always",
			"SuccessExitStatus": "0",
			"OnFailure":         "restart",
		},
	}
}

// runService runs the agent under the service manager when started by it,
// or in the foreground until ctx ends (Ctrl-C, SIGTERM).
func runService(ctx context.Context, cfg config.Config, configPath string, run func(context.Context) error) error {
	if service.Interactive() {
		return run(ctx)
	}
	p := &program{parent: ctx, run: run}
	s, err := service.New(p, serviceConfig(cfg, configPath))
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if err := s.Run(); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// controlService installs, removes, starts or stops the service.
func controlService(action string, cfg config.Config, configPath string) error {
	s, err := service.New(&program{parent: context.Background()}, serviceConfig(cfg, configPath))
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if err := service.Control(s, action); err != nil {
		return fmt.Errorf("service %s: %w", action, err)
	}
	return nil
}

// serviceState says whether the service is installed and running, in words.
func serviceState(cfg config.Config, configPath string) string {
	s, err := service.New(&program{parent: context.Background()}, serviceConfig(cfg, configPath))
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return "not installed as a service"
	case err != nil:
		// System V init answers "stopped" and "not installed" alike.
		return "not running (" + s.Platform() + " says: " + err.Error() + ")"
	case st == service.StatusRunning:
		return "installed, running (" + s.Platform() + ")"
	case st == service.StatusStopped:
		return "installed, stopped (" + s.Platform() + ")"
	default:
		return "installed (" + s.Platform() + ")"
	}
}
