package connector

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
)

// Dual-SIM phones get one bridgev2 login per SIM: the device's own login is
// SIM 1 (or the only SIM), and SIM n ≥ 2 is a login of its own whose portals
// are separate rooms. A chat's room therefore always answers on the SIM the
// contact wrote to — never the wrong SIM.

const simSuffix = ".sim"

// simLoginID is the login of SIM n on a device.
func simLoginID(devID string, sim int) networkid.UserLoginID {
	if sim <= 1 {
		return networkid.UserLoginID(devID)
	}
	return networkid.UserLoginID(devID + simSuffix + strconv.Itoa(sim))
}

// parseLoginID splits a login id into its device and SIM (0: the device's
// own login, which stands for SIM 1 or the only SIM).
func parseLoginID(lid networkid.UserLoginID) (devID string, sim int) {
	s := string(lid)
	if i := strings.LastIndex(s, simSuffix); i > 0 {
		if n, err := strconv.Atoi(s[i+len(simSuffix):]); err == nil && n >= 2 {
			return s[:i], n
		}
	}
	return s, 0
}

// loginFor returns the login that carries SIM sim of a device: the SIM's own
// login if the phone has several SIMs and it exists, else the device's.
func (c *Connector) loginFor(devID string, sim int) *bridgev2.UserLogin {
	if sim >= 2 {
		if ul := c.br.GetCachedUserLoginByID(simLoginID(devID, sim)); ul != nil {
			return ul
		}
	}
	return c.br.GetCachedUserLoginByID(networkid.UserLoginID(devID))
}

// deviceLogins lists every login of a device (its own and its SIMs').
func (c *Connector) deviceLogins(devID string) []*bridgev2.UserLogin {
	var out []*bridgev2.UserLogin
	if ul := c.br.GetCachedUserLoginByID(networkid.UserLoginID(devID)); ul != nil {
		out = append(out, ul)
		for _, other := range ul.User.GetUserLogins() {
			if d, sim := parseLoginID(other.ID); d == devID && sim >= 2 {
				out = append(out, other)
			}
		}
	}
	return out
}

// ensureSIMLogins creates a login for each extra SIM the device announced.
func (c *Connector) ensureSIMLogins(ctx context.Context, devID string) error {
	_, sims, ok := c.ch.Caps(devID)
	if !ok || len(sims) < 2 {
		return nil
	}
	main := c.br.GetCachedUserLoginByID(networkid.UserLoginID(devID))
	if main == nil {
		return nil
	}
	for _, sim := range sims {
		if sim < 2 || c.br.GetCachedUserLoginByID(simLoginID(devID, sim)) != nil {
			continue
		}
		ul, err := main.User.NewLogin(ctx, &database.UserLogin{
			ID:         simLoginID(devID, sim),
			RemoteName: fmt.Sprintf("%s, SIM %d", main.RemoteName, sim),
		}, &bridgev2.NewLoginParams{DeleteOnConflict: false})
		if err != nil {
			return fmt.Errorf("login for SIM %d: %w", sim, err)
		}
		ul.Client.Connect(ctx)
		c.br.Log.Info().Str("device", devID[:7]).Int("sim", sim).Msg("Login created for the phone's other SIM")
	}
	return nil
}
