//go:build windows

package winfw

import (
	"errors"
	"fmt"
	"runtime"
	"slices"

	ole "github.com/go-ole/go-ole"
	"github.com/go-ole/go-ole/oleutil"
	"golang.org/x/sys/windows/registry"
)

// SavedKey is the registry key (under HKEY_LOCAL_MACHINE) where the first
// Apply records the profiles' defaults, in value SavedValue; Remove
// restores them from there and deletes the value.
const (
	SavedKey   = `SOFTWARE\mnguard\netcheck`
	SavedValue = "FirewallDefaults"
)

// New returns the enforcer over Windows Firewall's COM API (HNetCfg.FwPolicy2).
// It reads the profiles once, so that it fails here, with the reason, where
// the firewall cannot be driven (service stopped, no rights, Wine).
func New() (*Enforcer, error) {
	return newCOM(SavedKey)
}

func newCOM(savedKey string) (*Enforcer, error) {
	c := &comFirewall{savedKey: savedKey}
	if _, err := c.Defaults(); err != nil {
		return nil, err
	}
	return &Enforcer{fw: c}, nil
}

// comFirewall is the firewall interface over INetFwPolicy2, INetFwRules and
// INetFwRule (through IDispatch), and the registry.
type comFirewall struct {
	savedKey string
}

// Codes of the COM calls.
const (
	sFalse          = 0x00000001 // S_FALSE: COM already initialised on this thread
	rpcEChangedMode = 0x80010106 // RPC_E_CHANGED_MODE: initialised apartment-threaded
)

// withPolicy runs fn with an INetFwPolicy2 on a locked, COM-initialised
// thread.
func withPolicy(fn func(pol *ole.IDispatch) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := ole.CoInitializeEx(0, ole.COINIT_MULTITHREADED); err != nil {
		var oe *ole.OleError
		switch {
		case errors.As(err, &oe) && oe.Code() == sFalse:
			defer ole.CoUninitialize()
		case errors.As(err, &oe) && oe.Code() == rpcEChangedMode:
			// Someone made this thread apartment-threaded; COM works.
		default:
			return fmt.Errorf("CoInitializeEx: %w", err)
		}
	} else {
		defer ole.CoUninitialize()
	}
	unk, err := oleutil.CreateObject("HNetCfg.FwPolicy2")
	if err != nil {
		return comErr("create HNetCfg.FwPolicy2", err)
	}
	defer unk.Release()
	pol, err := unk.QueryInterface(ole.IID_IDispatch)
	if err != nil {
		return fmt.Errorf("INetFwPolicy2: IDispatch: %w", err)
	}
	defer pol.Release()
	return fn(pol)
}

// withRules runs fn with the policy's INetFwRules.
func withRules(fn func(pol, rules *ole.IDispatch) error) error {
	return withPolicy(func(pol *ole.IDispatch) error {
		v, err := oleutil.GetProperty(pol, "Rules")
		if err != nil {
			return comErr("INetFwPolicy2.Rules", err)
		}
		defer v.Clear()
		rules := v.ToIDispatch()
		if rules == nil {
			return fmt.Errorf("INetFwPolicy2.Rules: not an object (VT %d)", v.VT)
		}
		return fn(pol, rules)
	})
}

func (c *comFirewall) Defaults() (Defaults, error) {
	var d Defaults
	err := withPolicy(func(pol *ole.IDispatch) error {
		for i, p := range Profiles {
			on, err := getBool(pol, "FirewallEnabled", int32(p))
			if err != nil {
				return err
			}
			in, err := getInt(pol, "DefaultInboundAction", int32(p))
			if err != nil {
				return err
			}
			out, err := getInt(pol, "DefaultOutboundAction", int32(p))
			if err != nil {
				return err
			}
			d[i] = ProfileState{Enabled: on, Inbound: Action(in), Outbound: Action(out)}
		}
		return nil
	})
	if err != nil {
		return Defaults{}, fmt.Errorf("read the firewall profiles: %w", err)
	}
	return d, nil
}

func (c *comFirewall) SetDefaults(d Defaults) error {
	err := withPolicy(func(pol *ole.IDispatch) error {
		for i, p := range Profiles {
			// Blocking first, then on: a profile being turned on blocks
			// from its first moment.
			if err := put(pol, "DefaultOutboundAction", int32(p), int32(d[i].Outbound)); err != nil {
				return err
			}
			if err := put(pol, "DefaultInboundAction", int32(p), int32(d[i].Inbound)); err != nil {
				return err
			}
			if err := put(pol, "FirewallEnabled", int32(p), d[i].Enabled); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set the firewall profiles to %s: %w", d, err)
	}
	return nil
}

func (c *comFirewall) Rules(group string) ([]Rule, error) {
	var out []Rule
	err := withRules(func(_, rules *ole.IDispatch) error {
		var err error
		out, err = listRules(rules, group)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list the firewall rules: %w", err)
	}
	return out, nil
}

func listRules(rules *ole.IDispatch, group string) ([]Rule, error) {
	var out []Rule
	var itemErr error
	err := oleutil.ForEach(rules, func(v *ole.VARIANT) error {
		defer v.Clear()
		d := v.ToIDispatch()
		if d == nil {
			itemErr = fmt.Errorf("INetFwRules: an item is not an object (VT %d)", v.VT)
			return itemErr
		}
		g, err := getString(d, "Grouping")
		if err == nil && g == group {
			var r Rule
			if r, err = readRule(d); err == nil {
				out = append(out, r)
			}
		}
		itemErr = err
		return err
	})
	if err != nil && itemErr == nil {
		return nil, comErr("enumerate INetFwRules", err)
	}
	return out, err
}

func readRule(d *ole.IDispatch) (Rule, error) {
	r := Rule{Grouping: Group}
	var err error
	if r.Name, err = getString(d, "Name"); err != nil {
		return Rule{}, err
	}
	wrap := func(err error) error { return fmt.Errorf("rule %q: %w", r.Name, err) }
	if r.Description, err = getString(d, "Description"); err != nil {
		return Rule{}, wrap(err)
	}
	n, err := getInt(d, "Direction")
	if err != nil {
		return Rule{}, wrap(err)
	}
	r.Direction = Direction(n)
	if n, err = getInt(d, "Action"); err != nil {
		return Rule{}, wrap(err)
	}
	r.Action = Action(n)
	if n, err = getInt(d, "Protocol"); err != nil {
		return Rule{}, wrap(err)
	}
	r.Protocol = int32(n)
	if r.RemoteAddresses, err = getString(d, "RemoteAddresses"); err != nil {
		return Rule{}, wrap(err)
	}
	if r.Protocol == ProtoTCP || r.Protocol == ProtoUDP {
		if r.RemotePorts, err = getString(d, "RemotePorts"); err != nil {
			return Rule{}, wrap(err)
		}
	}
	if r.Enabled, err = getBool(d, "Enabled"); err != nil {
		return Rule{}, wrap(err)
	}
	if n, err = getInt(d, "Profiles"); err != nil {
		return Rule{}, wrap(err)
	}
	r.Profiles = int32(n)
	return r, nil
}

func (c *comFirewall) Add(rs []Rule) error {
	return withRules(func(_, rules *ole.IDispatch) error {
		for _, r := range rs {
			if err := addRule(rules, r); err != nil {
				return fmt.Errorf("add firewall rule %q: %w", r.Name, err)
			}
		}
		return nil
	})
}

func addRule(rules *ole.IDispatch, r Rule) error {
	unk, err := oleutil.CreateObject("HNetCfg.FWRule")
	if err != nil {
		return comErr("create HNetCfg.FWRule", err)
	}
	defer unk.Release()
	d, err := unk.QueryInterface(ole.IID_IDispatch)
	if err != nil {
		return fmt.Errorf("INetFwRule: IDispatch: %w", err)
	}
	defer d.Release()
	// The protocol goes before the ports: RemotePorts is refused on a
	// rule for any protocol.
	type prop struct {
		name string
		v    any
	}
	props := []prop{
		{"Name", r.Name},
		{"Description", r.Description},
		{"Grouping", r.Grouping},
		{"Direction", int32(r.Direction)},
		{"Action", int32(r.Action)},
		{"Protocol", r.Protocol},
		{"RemoteAddresses", r.RemoteAddresses},
		{"Profiles", r.Profiles},
	}
	if r.RemotePorts != "" {
		props = append(props, prop{"RemotePorts", r.RemotePorts})
	}
	props = append(props, prop{"Enabled", r.Enabled})
	for _, p := range props {
		if err := put(d, p.name, p.v); err != nil {
			return err
		}
	}
	if _, err := oleutil.CallMethod(rules, "Add", d); err != nil {
		return comErr("INetFwRules.Add", err)
	}
	return nil
}

// Remove enumerates the rules once, removes each rule of group with one of
// the names (INetFwRules.Remove takes a name and removes one rule of that
// name; ours all begin with "mnguard "), and enumerates again to make sure.
func (c *comFirewall) Remove(group string, names []string) error {
	err := withRules(func(_, rules *ole.IDispatch) error {
		have, err := listRules(rules, group)
		if err != nil {
			return err
		}
		for _, r := range have {
			if !slices.Contains(names, r.Name) {
				continue
			}
			if _, err := oleutil.CallMethod(rules, "Remove", r.Name); err != nil {
				return fmt.Errorf("rule %q: %w", r.Name, comErr("INetFwRules.Remove", err))
			}
		}
		if have, err = listRules(rules, group); err != nil {
			return err
		}
		for _, r := range have {
			if slices.Contains(names, r.Name) {
				return fmt.Errorf("rule %q still there after INetFwRules.Remove", r.Name)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove firewall rules: %w", err)
	}
	return nil
}

func (c *comFirewall) Saved() (Defaults, bool, error) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, c.savedKey, registry.QUERY_VALUE)
	if errors.Is(err, registry.ErrNotExist) {
		return Defaults{}, false, nil
	}
	if err != nil {
		return Defaults{}, false, fmt.Errorf(`open HKLM\%s: %w`, c.savedKey, err)
	}
	defer k.Close()
	s, _, err := k.GetStringValue(SavedValue)
	if errors.Is(err, registry.ErrNotExist) {
		return Defaults{}, false, nil
	}
	if err != nil {
		return Defaults{}, false, fmt.Errorf(`read HKLM\%s\%s: %w`, c.savedKey, SavedValue, err)
	}
	d, err := ParseDefaults(s)
	if err != nil {
		return Defaults{}, false, fmt.Errorf(`HKLM\%s\%s: %w`, c.savedKey, SavedValue, err)
	}
	return d, true, nil
}

func (c *comFirewall) Save(d Defaults) error {
	k, _, err := registry.CreateKey(registry.LOCAL_MACHINE, c.savedKey, registry.SET_VALUE)
	if err != nil {
		return fmt.Errorf(`create HKLM\%s: %w`, c.savedKey, err)
	}
	defer k.Close()
	if err := k.SetStringValue(SavedValue, d.String()); err != nil {
		return fmt.Errorf(`write HKLM\%s\%s: %w`, c.savedKey, SavedValue, err)
	}
	return nil
}

func (c *comFirewall) Forget() error {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, c.savedKey, registry.SET_VALUE)
	if errors.Is(err, registry.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf(`open HKLM\%s: %w`, c.savedKey, err)
	}
	defer k.Close()
	if err := k.DeleteValue(SavedValue); err != nil && !errors.Is(err, registry.ErrNotExist) {
		return fmt.Errorf(`delete HKLM\%s\%s: %w`, c.savedKey, SavedValue, err)
	}
	return nil
}

// comError is a failed COM call, its HRESULT named.
type comError struct {
	call string
	err  *ole.OleError
}

func (e *comError) Error() string {
	hr := uint32(e.err.Code())
	msg := fmt.Sprintf("%s: HRESULT %#08x", e.call, hr)
	if name := hresultNames[hr]; name != "" {
		msg += " " + name
	}
	if d := e.err.Description(); d != "" && d != "<nil>" {
		msg += " (" + d + ")"
	}
	return msg
}

func (e *comError) Unwrap() error { return e.err }

var hresultNames = map[uint32]string{
	0x80004001: "E_NOTIMPL",
	0x80070005: "E_ACCESSDENIED",
	0x80070002: "ERROR_FILE_NOT_FOUND",
	0x800706d9: "EPT_S_NOT_REGISTERED (the firewall service is not running)",
	0x80020003: "DISP_E_MEMBERNOTFOUND",
	0x80020006: "DISP_E_UNKNOWNNAME",
	0x80020009: "DISP_E_EXCEPTION (the method failed)",
	0x8002802b: "TYPE_E_ELEMENTNOTFOUND (no type information for the name)",
	0x80040154: "REGDB_E_CLASSNOTREG",
}

// comErr names err's HRESULT when it is a COM error.
func comErr(call string, err error) error {
	var oe *ole.OleError
	if errors.As(err, &oe) {
		return &comError{call: call, err: oe}
	}
	return fmt.Errorf("%s: %w", call, err)
}

// get reads a property (with its parameters) as a VARIANT the caller
// clears.
func get(d *ole.IDispatch, name string, params ...any) (*ole.VARIANT, error) {
	v, err := oleutil.GetProperty(d, name, params...)
	if err != nil {
		return nil, comErr(fmt.Sprintf("get %s%v", name, params), err)
	}
	return v, nil
}

func put(d *ole.IDispatch, name string, params ...any) error {
	v, err := oleutil.PutProperty(d, name, params...)
	if err != nil {
		return comErr(fmt.Sprintf("put %s%v", name, params), err)
	}
	v.Clear()
	return nil
}

func getBool(d *ole.IDispatch, name string, params ...any) (bool, error) {
	v, err := get(d, name, params...)
	if err != nil {
		return false, err
	}
	defer v.Clear()
	b, ok := v.Value().(bool)
	if !ok {
		return false, fmt.Errorf("%s: VT %d, want a boolean", name, v.VT)
	}
	return b, nil
}

func getInt(d *ole.IDispatch, name string, params ...any) (int64, error) {
	v, err := get(d, name, params...)
	if err != nil {
		return 0, err
	}
	defer v.Clear()
	switch x := v.Value().(type) {
	case int32:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint8:
		return int64(x), nil
	}
	return 0, fmt.Errorf("%s: VT %d, want an integer", name, v.VT)
}

func getString(d *ole.IDispatch, name string, params ...any) (string, error) {
	v, err := get(d, name, params...)
	if err != nil {
		return "", err
	}
	defer v.Clear()
	switch x := v.Value().(type) {
	case string:
		return x, nil
	case nil: // VT_EMPTY, VT_NULL: the property is not set
		return "", nil
	}
	return "", fmt.Errorf("%s: VT %d, want a string", name, v.VT)
}
