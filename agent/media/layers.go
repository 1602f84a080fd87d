package media

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// InstallRules writes the udev hook rule and the udisks rule into dir
// (/etc/udev/rules.d), for the agent binary at agentPath.
func InstallRules(dir, agentPath string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("install udev rules: %w", err)
	}
	for name, data := range map[string][]byte{
		UdevRuleFile:   UdevRule(agentPath, ""),
		UdisksRuleFile: UdisksRule(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("install udev rules: %w", err)
		}
	}
	return nil
}

// RemoveRules removes what InstallRules wrote.
func RemoveRules(dir string) error {
	var errs []error
	for _, name := range []string{UdevRuleFile, UdisksRuleFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove udev rules: %w", err)
	}
	return nil
}
