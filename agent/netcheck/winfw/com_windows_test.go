//go:build windows

package winfw

// These tests call the real firewall COM API and registry. make wine-test
// can run them under Wine (scripts/wine/): the registry works there;
// Wine 8.0's hnetcfg.dll creates the firewall objects but implements their
// methods as stubs, which TestWindowsFirewallCOM names (and asserts) there.
// On Windows nothing is skipped.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	ole "github.com/go-ole/go-ole"
	"github.com/go-ole/go-ole/oleutil"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"

	"github.com/mnguard/mnguard/internal/netpolicy"
	"github.com/mnguard/mnguard/internal/testenv"
)

// testKey is a registry key of the test's own under HKLM\SOFTWARE, deleted
// when the test ends.
func testKey(t *testing.T) string {
	t.Helper()
	parent := `SOFTWARE\mnguard-test`
	name := fmt.Sprintf("winfw-%s-%d", t.Name(), windows.GetCurrentProcessId())
	t.Cleanup(func() {
		registry.DeleteKey(registry.LOCAL_MACHINE, parent+`\`+name)
		registry.DeleteKey(registry.LOCAL_MACHINE, parent) // fails while another test's key is there
	})
	return parent + `\` + name
}

func TestWindowsSavedDefaultsRegistry(t *testing.T) {
	c := &comFirewall{savedKey: testKey(t)}
	if _, ok, err := c.Saved(); ok || err != nil {
		t.Fatalf("Saved on a fresh key = %v, %v", ok, err)
	}
	if err := c.Forget(); err != nil {
		t.Errorf("Forget with nothing saved: %v", err)
	}
	d := Defaults{{false, Block, Allow}, {true, Block, Allow}, {true, Allow, Block}}
	if err := c.Save(d); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Saved()
	if err != nil || !ok || got != d {
		t.Fatalf("Saved = %s, %v, %v; want %s", got, ok, err, d)
	}
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, c.savedKey, registry.ALL_ACCESS)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if s, typ, err := k.GetStringValue(SavedValue); err != nil || typ != registry.SZ || s != d.String() {
		t.Errorf("registry value = %q (type %d), %v; want REG_SZ %q", s, typ, err, d.String())
	}
	// A value someone broke is an error that names it, never defaults
	// made up.
	if err := k.SetStringValue(SavedValue, "domain:on"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Saved(); err == nil || !strings.Contains(err.Error(), SavedValue) {
		t.Errorf("Saved of a broken value = %v, want an error naming %s", err, SavedValue)
	}
	if err := c.Forget(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Saved(); ok || err != nil {
		t.Errorf("Saved after Forget = %v, %v", ok, err)
	}
}

// wineGaps names what Wine's firewall COM objects cannot do, as they answer
// here; "" when they did everything asked. Creating the objects must work.
func wineGaps(t *testing.T) string {
	t.Helper()
	var gaps []string
	err := withRules(func(pol, rules *ole.IDispatch) error {
		if _, err := getBool(pol, "FirewallEnabled", int32(Public)); err != nil {
			gaps = append(gaps, "INetFwPolicy2 profile properties fail ("+err.Error()+")")
		}
		if _, err := getInt(rules, "Count"); err != nil {
			gaps = append(gaps, "INetFwRules fails ("+err.Error()+")")
		}
		unk, err := oleutil.CreateObject("HNetCfg.FWRule")
		if err != nil {
			return fmt.Errorf("create HNetCfg.FWRule: %w", err)
		}
		defer unk.Release()
		d, err := unk.QueryInterface(ole.IID_IDispatch)
		if err != nil {
			return err
		}
		defer d.Release()
		if err := put(d, "Name", "mnguard probe"); err != nil {
			gaps = append(gaps, "INetFwRule fails ("+err.Error()+")")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("under Wine, creating the firewall COM objects failed: %v", err)
	}
	return strings.Join(gaps, "; ")
}

// allBut is a policy allowing every address but 192.0.2.0/24 (TEST-NET-1):
// applying it on a real Windows machine cuts nothing the machine uses.
func allBut(t *testing.T) *netpolicy.Policy {
	t.Helper()
	p := &netpolicy.Policy{Enforce: true}
	for _, r := range complement([]addrRange{prefixRange(netip.MustParsePrefix("192.0.2.0/24"))}) {
		for _, pfx := range rangePrefixes(r) {
			if pfx.Bits() == 0 { // ::/0 is refused: two halves
				p.Networks = append(p.Networks, netpolicy.Network{Prefix: netip.MustParsePrefix("::/1")}, netpolicy.Network{Prefix: netip.MustParsePrefix("8000::/1")})
				continue
			}
			p.Networks = append(p.Networks, netpolicy.Network{Prefix: pfx})
		}
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.Version = p.ComputeVersion()
	return p
}

func rangePrefixes(r addrRange) []netip.Prefix {
	var out []netip.Prefix
	cur := r.first
	for {
		bits := cur.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(cur, bits-1)
			if p.Masked().Addr() != cur || prefixRange(p).last.Compare(r.last) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(cur, bits)
		out = append(out, p)
		last := prefixRange(p).last
		if last == r.last {
			return out
		}
		cur = last.Next()
	}
}

// TestWindowsFirewallCOM applies, checks, breaks, repairs and removes the
// rules through the real COM API, and restores the profiles as they were.
func TestWindowsFirewallCOM(t *testing.T) {
	ctx := context.Background()
	wine := testenv.WineVersion()
	e, err := newCOM(testKey(t))
	if err != nil {
		if wine != "" {
			if gaps := wineGaps(t); gaps != "" {
				// Wine's hnetcfg/policy.c implements INetFwPolicy2's
				// methods as FIXME stubs returning E_NOTIMPL, which
				// IDispatch::Invoke reports as DISP_E_EXCEPTION.
				// Not a skip: the gaps are asserted (wineGaps found exactly
				// them), and the rest runs on Windows.
				t.Logf("Wine %s cannot drive Windows Firewall: its hnetcfg.dll creates HNetCfg.FwPolicy2 and HNetCfg.FWRule, but: %s. New: %v. The plan and the enforcer run in the portable tests against an in-memory firewall; this test runs whole on Windows", wine, gaps, err)
				return
			}
		}
		t.Fatalf("New: %v", err)
	}
	c := e.fw.(*comFirewall)
	before, err := c.Defaults()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Remove(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	p := allBut(t)
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
		t.Fatalf("Check after Apply = %v, %q, %v", ok, detail, err)
	}
	plan, _ := MakePlan(p)
	victim := plan.Rules[len(plan.Rules)-1].Name
	if err := c.Remove(Group, []string{victim}); err != nil {
		t.Fatal(err)
	}
	if ok, detail, err := e.Check(ctx, p); err != nil || ok || !strings.Contains(detail, victim) {
		t.Errorf("Check after deleting %q = %v, %q, %v", victim, ok, detail, err)
	}
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ok, detail, err := e.Check(ctx, p); err != nil || !ok {
		t.Errorf("Check after repair = %v, %q, %v", ok, detail, err)
	}
	if err := e.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if rs, err := c.Rules(Group); err != nil || len(rs) != 0 {
		t.Errorf("rules of group %q after Remove: %d, %v", Group, len(rs), err)
	}
	if after, err := c.Defaults(); err != nil || after != before {
		t.Errorf("profiles after Remove %s, %v; want %s", after, err, before)
	}
}

// TestWindowsNewUnderWine: where the firewall cannot be driven, New fails
// with the COM call that failed, so the agent reports enforcement as
// unavailable instead of pretending.
func TestWindowsNewUnderWine(t *testing.T) {
	if testenv.WineVersion() == "" {
		t.Log("Windows: TestWindowsFirewallCOM covers New")
		return
	}
	_, err := New()
	if err == nil {
		t.Log("this Wine drives the firewall: TestWindowsFirewallCOM covers it")
		return
	}
	var oe *ole.OleError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "read the firewall profiles") {
		t.Errorf("New = %v, want the failed COM call", err)
	}
}
