package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mnguard/mnguard/agent/exemptions"
	"github.com/mnguard/mnguard/agent/state"
	"github.com/mnguard/mnguard/internal/exemption"
)

const exemptionUsage = `usage: mnguard-agent exemption SUBCOMMAND [flags]

Device exemptions: one removable device writable for a bounded time.
The collector pushes the helpdesk's exemptions to the running agent; for a
terminal that cannot reach the collector, the helpdesk answers a challenge:

  challenge --device VID:PID:SERIAL --duration 1h
             show a challenge for the device and duration (a multiple of
             15m up to 8h). Read it, the terminal ID and the device to the
             helpdesk; they answer with 'mnguardctl exemptions offline-code'.
             It can be answered for 1 hour.
  enter CODE apply the helpdesk's response code: the device is writable
             for the duration, starting now. Each challenge and code works
             once; 5 wrong codes lock entry for 15 minutes.
  list       the exemptions the agent holds and their states

The device ID is what 'mnguard-agent status' shows for an attached device.
These talk to the running agent over its control socket (root only; on
Windows a named pipe for the Administrators); list reads the state
directory when the agent is not running.
Exit status: 0 done, 1 refused or failed, 2 usage.
`

// usageError is an error in how the command was called (exit 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// runExemption runs 'mnguard-agent exemption ...' and returns its exit code.
func runExemption(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprint(w, exemptionUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub := args[0]
	fs := flag.NewFlagSet("mnguard-agent exemption "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, getenv)
	var device string
	var duration time.Duration
	if sub == "challenge" {
		fs.StringVar(&device, "device", "", "the device, VID:PID:SERIAL (required)")
		fs.DurationVar(&duration, "duration", time.Hour, "how long it stays writable once the code is entered: 15m to 8h in steps of 15m")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	err := func() error {
		switch sub {
		case "challenge", "enter", "list":
		default:
			return usagef("unknown subcommand %q (challenge, enter or list)", sub)
		}
		cfg, err := c.load(fs, getenv)
		if err != nil {
			return err
		}
		sock := exemptions.ControlAddress(cfg.StateDir)
		switch sub {
		case "challenge":
			return exemptionChallenge(ctx, stdout, sock, fs.Args(), device, duration)
		case "enter":
			return exemptionEnter(ctx, stdout, sock, fs.Args())
		default:
			if fs.NArg() != 0 {
				return usagef("list takes no arguments")
			}
			return exemptionList(ctx, stdout, stderr, sock, state.Dir(cfg.StateDir).Path(exemptions.FileName))
		}
	}()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "mnguard-agent exemption %s: %s\n", sub, strings.ReplaceAll(err.Error(), "\n", "; "))
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

// call asks the running agent; where there is no control socket it says so.
func call(ctx context.Context, sock string, req exemptions.Request) (exemptions.Response, error) {
	if runtime.GOOS != "linux" && runtime.GOOS != "windows" {
		return exemptions.Response{}, fmt.Errorf("offline exemption codes are not available on %s: %w", runtime.GOOS, errors.ErrUnsupported)
	}
	resp, err := exemptions.Call(ctx, sock, req)
	if errors.Is(err, exemptions.ErrNotRunning) {
		return resp, fmt.Errorf("the agent is not running (no answer on %s); start it: mnguard-agent start", sock)
	}
	return resp, err
}

func exemptionChallenge(ctx context.Context, w io.Writer, sock string, args []string, device string, duration time.Duration) error {
	switch {
	case len(args) != 0:
		return usagef("unexpected argument %q; the device goes in --device", args[0])
	case device == "":
		return usagef("--device VID:PID:SERIAL is required")
	}
	if _, err := exemption.ParseDevice(device); err != nil {
		return usageError{err}
	}
	if err := exemption.OfflineDuration(duration); err != nil {
		return usageError{err}
	}
	resp, err := call(ctx, sock, exemptions.Request{Op: exemptions.OpChallenge, Device: device, DurationSeconds: uint32(duration / time.Second)})
	if err != nil {
		return err
	}
	c := resp.Challenge
	if c == nil {
		return errors.New("the agent answered without a challenge")
	}
	fmt.Fprintf(w, "Challenge: %s\n", c.Challenge)
	fmt.Fprintf(w, "Read to the helpdesk: the challenge, terminal %s, device %s, %s.\n", c.TerminalID, c.Device, short(time.Duration(c.DurationSeconds)*time.Second))
	fmt.Fprintf(w, "Then type their code: mnguard-agent exemption enter CODE (before %s).\n", c.ExpiresAt.Local().Format("15:04"))
	return nil
}

func exemptionEnter(ctx context.Context, w io.Writer, sock string, args []string) error {
	if len(args) == 0 {
		return usagef("the helpdesk's response code is required: mnguard-agent exemption enter CODE")
	}
	code := strings.Join(args, "") // "ABCDE FGHJK" typed as two words
	if _, err := exemption.Normalize(code); err != nil {
		return usageError{fmt.Errorf("code: %w", err)}
	}
	resp, err := call(ctx, sock, exemptions.Request{Op: exemptions.OpEnter, Code: code})
	if err != nil {
		return err
	}
	if resp.Exemption == nil {
		return errors.New("the agent answered without the exemption")
	}
	fmt.Fprintln(w, describe(*resp.Exemption))
	return nil
}

// describe is one exemption in a line: "sdb (0781:5581:SERIAL) writable
// until 15:04 (1h)".
func describe(i exemptions.Info) string {
	until := fmt.Sprintf("until %s (%s)", i.NotAfter.Local().Format("15:04"), short(i.Remaining()))
	switch i.State {
	case exemptions.StateApplied:
		return fmt.Sprintf("%s (%s) writable %s", strings.Join(i.Devices, ", "), i.Device, until)
	case exemptions.StateWaiting:
		return fmt.Sprintf("%s may be written %s; not writable yet: %s", i.Device, until, i.Detail)
	}
	return fmt.Sprintf("%s: %s (%s)", i.Device, i.State, i.Detail)
}

func exemptionList(ctx context.Context, w, stderr io.Writer, sock, file string) error {
	var infos []exemptions.Info
	resp, err := exemptions.Call(ctx, sock, exemptions.Request{Op: exemptions.OpList})
	switch {
	case errors.Is(err, exemptions.ErrNotRunning):
		infos, err = exemptions.ReadFile(file, time.Now())
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "mnguard-agent exemption list: the agent is not running; from %s (no device is writable without it)\n", file)
	case err != nil:
		return err
	default:
		infos = resp.Exemptions
	}
	if len(infos) == 0 {
		fmt.Fprintln(w, "No exemptions.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDEVICE\tSOURCE\tSTATE\tUNTIL\tLEFT\tWRITABLE\tDETAIL")
	for _, i := range infos {
		left, devs, detail := "-", "-", i.Detail
		if detail == "" {
			detail = "-"
		}
		if i.RemainingSeconds > 0 {
			left = short(i.Remaining())
		}
		if len(i.Devices) > 0 {
			devs = strings.Join(i.Devices, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, i.Device, i.Source, i.State,
			i.NotAfter.Local().Format("2006-01-02 15:04"), left, devs, detail)
	}
	return tw.Flush()
}

// short formats a duration as people say it: "1h", "1h30m", "45m", "30s".
func short(d time.Duration) string {
	if d < time.Minute {
		return max(d, 0).Round(time.Second).String()
	}
	d = d.Round(time.Minute)
	h, m := d/time.Hour, (d%time.Hour)/time.Minute
	switch {
	case h == 0:
		return fmt.Sprintf("%dm", m)
	case m == 0:
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dh%dm", h, m)
}
