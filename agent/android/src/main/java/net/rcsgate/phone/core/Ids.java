package net.rcsgate.phone.core;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/**
 * Event ids the app gives the agent. They must be stable: the same phone message always gets the
 * same id, so an event offered twice (after a crash, or once by the SMS broadcast and once by the
 * backfill of the SMS provider) is stored once by the agent.
 */
public final class Ids {
    /** The agent's limit for an event id (backend.MaxKeyLen). */
    public static final int MAX_LEN = 126;

    private Ids() {}

    /** 1 to 126 characters of [A-Za-z0-9._:@=+-] (backend.ValidKey). */
    public static boolean valid(String id) {
        if (id == null || id.isEmpty() || id.length() > MAX_LEN) return false;
        for (int i = 0; i < id.length(); i++) {
            char c = id.charAt(i);
            boolean ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                    || c == '.' || c == '_' || c == ':' || c == '@' || c == '=' || c == '+' || c == '-';
            if (!ok) return false;
        }
        return true;
    }

    /** prefix + the first 32 hex digits of SHA-256 over the parts, each length-prefixed. */
    public static String hashed(String prefix, String... parts) {
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            for (String p : parts) {
                byte[] b = (p == null ? "" : p).getBytes(StandardCharsets.UTF_8);
                md.update((b.length + ":").getBytes(StandardCharsets.UTF_8));
                md.update(b);
            }
            byte[] sum = md.digest();
            StringBuilder sb = new StringBuilder(prefix);
            for (int i = 0; i < 16; i++) sb.append(String.format("%02x", sum[i] & 0xff));
            return sb.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
