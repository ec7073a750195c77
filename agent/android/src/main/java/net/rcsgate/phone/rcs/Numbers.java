package net.rcsgate.phone.rcs;

/**
 * Phone numbers as notifications show them: "tel:" URIs, Person keys, and titles that are a
 * number because the sender is not in the contacts ("+1 202-555-0100", "(202) 555-0100"). The
 * bridge normalises to E.164 with the phone's region; here a number only needs to be recognised
 * and compared.
 */
final class Numbers {
    private Numbers() {}

    /**
     * s as "+digits" or "digits" if it is written as a phone number (digits with +, spaces, dashes,
     * dots, slashes and parentheses; 3 to 15 digits), else null. Letters make it a name.
     */
    static String parse(String s) {
        if (s == null) return null;
        String t = s.trim();
        if (t.isEmpty() || t.length() > 40) return null;
        StringBuilder d = new StringBuilder();
        boolean plus = false;
        for (int i = 0; i < t.length(); i++) {
            char c = t.charAt(i);
            if (c >= '0' && c <= '9') {
                d.append(c);
            } else if (c == '+' && d.length() == 0 && !plus) {
                plus = true;
            } else if (c == ' ' || c == '-' || c == '.' || c == '/' || c == '(' || c == ')' || c == '\u00a0' || c == '\u2011') {
                // separators people and apps put in numbers
            } else {
                return null;
            }
        }
        if (d.length() < 3 || d.length() > 15) return null;
        return (plus ? "+" : "") + d;
    }

    /** The number in a "tel:" URI (Person.getUri()), or null. */
    static String fromUri(String uri) {
        if (uri == null || !uri.regionMatches(true, 0, "tel:", 0, 4)) return null;
        String rest = uri.substring(4);
        try {
            rest = java.net.URLDecoder.decode(rest.replace("+", "%2B"), "UTF-8");
        } catch (java.io.UnsupportedEncodingException | IllegalArgumentException e) {
            return null;
        }
        int semi = rest.indexOf(';'); // tel:+1...;ext=2
        return parse(semi >= 0 ? rest.substring(0, semi) : rest);
    }

    /** Whether a and b are the same number, in whatever form (national or international). */
    static boolean same(String a, String b) {
        String x = digits(a);
        String y = digits(b);
        if (x.isEmpty() || y.isEmpty()) return false;
        if (x.length() >= 8 && y.length() >= 8) {
            int n = Math.min(9, Math.min(x.length(), y.length()));
            return x.regionMatches(x.length() - n, y, y.length() - n, n);
        }
        return x.equals(y);
    }

    static String digits(String s) {
        if (s == null) return "";
        StringBuilder d = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c >= '0' && c <= '9') d.append(c);
        }
        return d.toString();
    }
}
