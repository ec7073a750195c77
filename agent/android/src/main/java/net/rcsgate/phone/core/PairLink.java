package net.rcsgate.phone.core;

import java.io.UnsupportedEncodingException;
import java.net.URLDecoder;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.List;

/**
 * A pairing link, rcsgate://pair?addr=HOST:PORT&token=...&pin=..., as `rcsgate pair` and the bot's
 * `login` show it (text or QR code). The same checks as the agent's (internal/wire/pairlink.go),
 * so the app can tell a person what is wrong with a link before starting anything. The pin itself
 * is checked by the agent when it connects.
 */
public final class PairLink {
    static final int MAX_LEN = 2048;

    public final List<String> addrs;
    public final String token;
    public final String text; // the link as given, trimmed

    private PairLink(List<String> addrs, String token, String text) {
        this.addrs = Collections.unmodifiableList(addrs);
        this.token = token;
        this.text = text;
    }

    /** A link that is not valid; the message is for a person. */
    public static final class Invalid extends Exception {
        public Invalid(String message) {
            super(message);
        }
    }

    public static PairLink parse(String s) throws Invalid {
        if (s == null) throw new Invalid("No pairing link given.");
        s = s.trim();
        if (s.isEmpty()) throw new Invalid("No pairing link given. Paste the link that starts with rcsgate://pair?");
        if (s.length() > MAX_LEN) throw new Invalid("This is too long to be a pairing link.");
        String prefix = "rcsgate://pair?";
        String alt = "rcsgate:pair?";
        String query;
        if (s.regionMatches(true, 0, prefix, 0, prefix.length())) {
            query = s.substring(prefix.length());
        } else if (s.regionMatches(true, 0, alt, 0, alt.length())) {
            query = s.substring(alt.length());
        } else {
            throw new Invalid("This is not an rcsgate pairing link: it must start with rcsgate://pair?");
        }
        int hash = query.indexOf('#');
        if (hash >= 0) query = query.substring(0, hash);
        List<String> addrs = new ArrayList<>();
        String token = null;
        String pin = null;
        for (String kv : query.split("&")) {
            if (kv.isEmpty()) continue;
            int eq = kv.indexOf('=');
            String k = decode(eq < 0 ? kv : kv.substring(0, eq));
            String v = eq < 0 ? "" : decode(kv.substring(eq + 1));
            switch (k) {
                case "addr":
                    checkAddr(v);
                    addrs.add(v);
                    break;
                case "token":
                    if (token == null) token = v;
                    break;
                case "pin":
                    if (pin == null) pin = v;
                    break;
                default:
                    break; // newer servers may add fields
            }
        }
        if (addrs.isEmpty()) throw new Invalid("The link names no server address. Copy the whole link again.");
        if (token == null || token.length() < 16 || token.length() > 128) {
            throw new Invalid("The link's token is missing or cut short. Copy the whole link again.");
        }
        byte[] p;
        try {
            p = Base64.getUrlDecoder().decode(pin == null ? "" : pin);
        } catch (IllegalArgumentException e) {
            p = new byte[0];
        }
        if (p.length != 32 || pin.endsWith("=")) {
            throw new Invalid("The link's server pin is missing or damaged. Copy the whole link again.");
        }
        return new PairLink(addrs, token, s);
    }

    private static String decode(String s) throws Invalid {
        try {
            return URLDecoder.decode(s, "UTF-8");
        } catch (IllegalArgumentException | UnsupportedEncodingException e) {
            throw new Invalid("The link is damaged (bad %-escape). Copy it again.");
        }
    }

    static void checkAddr(String a) throws Invalid {
        int colon = a.lastIndexOf(':');
        String host = colon < 0 ? "" : a.substring(0, colon);
        String port = colon < 0 ? "" : a.substring(colon + 1);
        if (host.startsWith("[") && host.endsWith("]")) host = host.substring(1, host.length() - 1);
        else if (host.contains(":")) host = ""; // an IPv6 address needs brackets
        if (host.isEmpty() || host.contains("[") || host.contains("]")) {
            throw new Invalid("The server address \"" + shorten(a) + "\" is not HOST:PORT.");
        }
        int n;
        try {
            n = Integer.parseInt(port);
        } catch (NumberFormatException e) {
            n = 0;
        }
        if (n < 1 || n > 65535 || !port.matches("[0-9]+")) {
            throw new Invalid("The server address \"" + shorten(a) + "\" has a bad port.");
        }
    }

    static String shorten(String s) {
        return s.length() > 60 ? s.substring(0, 60) + "…" : s;
    }

    /** The first server address, for "Pair with …?". */
    public String server() {
        return addrs.get(0);
    }
}
