package net.rcsgate.phone.it;

import java.io.IOException;
import java.io.StringReader;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.xml.parsers.DocumentBuilderFactory;
import net.rcsgate.phone.rcs.ComposeDriver;
import net.rcsgate.phone.rcs.UiNode;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.Node;
import org.xml.sax.InputSource;

/**
 * A messaging app's compose screen for the compose driver, from a fixture of src/fixtures/ui (a
 * uiautomator dump with the fixture's roles): opening a conversation shows the screen with the
 * text as its draft after showAfter looks; pressing the send control moves the draft into the
 * conversation (unless swallow is set: then the press does nothing visible).
 */
public final class FakeMessagingApp implements ComposeDriver.Screen {
    /** One sent message: to whom, what, through which app's screen. */
    public static final class Sent {
        public final String pkg;
        public final String number;
        public final String text;

        Sent(String pkg, String number, String text) {
            this.pkg = pkg;
            this.number = number;
            this.text = text;
        }
    }

    public boolean connected = true;
    public boolean locked;
    public boolean swallow;
    public int showAfter;
    public final List<String> installed = new ArrayList<>();
    public final List<Sent> sent = new ArrayList<>();
    public int leaves;
    /** Which fixture each app shows (pkg → fixture name under fixtures/ui). */
    public final Map<String, String> screens = new HashMap<>();

    private String pkg;
    private String number;
    private String draft;
    private final List<String> bubbles = new ArrayList<>();
    private int looks;
    private Listener listener;

    /** Told about what the app does (the integration driver reports it). */
    public interface Listener {
        void opened(String pkg, String number);

        void sent(Sent s);
    }

    public void listen(Listener l) {
        listener = l;
    }

    @Override
    public synchronized boolean connected() {
        return connected;
    }

    @Override
    public synchronized boolean locked() {
        return locked;
    }

    @Override
    public synchronized boolean installed(String p) {
        return installed.contains(p);
    }

    @Override
    public synchronized void open(String p, String to, String text) {
        if (!screens.containsKey(p)) throw new IllegalStateException("no screen for " + p);
        pkg = p;
        number = to;
        draft = text;
        bubbles.clear();
        looks = 0;
        if (listener != null) listener.opened(p, to);
    }

    @Override
    public synchronized UiNode root() {
        if (pkg == null) return null;
        if (looks++ < showAfter) return null; // the app is still starting
        try {
            Document d = DocumentBuilderFactory.newInstance().newDocumentBuilder()
                    .parse(new InputSource(new StringReader(Fixtures.text("fixtures/ui/" + screens.get(pkg) + ".xml"))));
            Element top = first(d.getDocumentElement());
            return top == null ? null : new XmlNode(top);
        } catch (Exception e) {
            throw new IllegalStateException("fixture " + screens.get(pkg) + ": " + e.getMessage(), e);
        }
    }

    @Override
    public synchronized void leave() {
        pkg = null;
        leaves++;
    }

    /** What the conversation shows now (sent messages after the fixture's own). */
    public synchronized List<String> bubbles() {
        return new ArrayList<>(bubbles);
    }

    private synchronized boolean press() {
        if (pkg == null || draft == null || draft.isEmpty() || swallow) return true;
        Sent s = new Sent(pkg, number, draft);
        sent.add(s);
        bubbles.add(draft);
        draft = "";
        if (listener != null) listener.sent(s);
        return true;
    }

    private static Element first(Element e) {
        for (Node n = e.getFirstChild(); n != null; n = n.getNextSibling()) if (n instanceof Element) return (Element) n;
        return null;
    }

    /** One node of the fixture, with the app's live draft and sent messages. */
    private final class XmlNode implements UiNode {
        private final Element e;
        private final List<UiNode> kids = new ArrayList<>();

        XmlNode(Element e) {
            this.e = e;
            for (Node n = e.getFirstChild(); n != null; n = n.getNextSibling()) if (n instanceof Element) kids.add(new XmlNode((Element) n));
            if ("list".equals(e.getAttribute("fixture-role"))) {
                for (String b : bubbles) kids.add(new Bubble(e.getAttribute("package"), e.getAttribute("fixture-bubble-id"), b));
            }
        }

        private String attr(String a) {
            String v = e.getAttribute(a);
            return v.isEmpty() ? null : v;
        }

        @Override
        public String pkg() {
            return attr("package");
        }

        @Override
        public String viewId() {
            return attr("resource-id");
        }

        @Override
        public String className() {
            return attr("class");
        }

        @Override
        public String text() {
            if ("field".equals(e.getAttribute("fixture-role"))) return draft;
            return attr("text");
        }

        @Override
        public String description() {
            return attr("content-desc");
        }

        @Override
        public boolean clickable() {
            return "true".equals(e.getAttribute("clickable"));
        }

        @Override
        public boolean enabled() {
            return !"false".equals(e.getAttribute("enabled"));
        }

        @Override
        public boolean editable() {
            return "true".equals(e.getAttribute("editable"));
        }

        @Override
        public int childCount() {
            return kids.size();
        }

        @Override
        public UiNode child(int i) {
            return i < kids.size() ? kids.get(i) : null;
        }

        @Override
        public boolean click() {
            if (!clickable()) return false;
            if ("send".equals(e.getAttribute("fixture-role"))) return press();
            return true;
        }
    }

    /** A message the app added to the conversation. */
    private static final class Bubble implements UiNode {
        private final String pkg;
        private final String id;
        private final String text;

        Bubble(String pkg, String id, String text) {
            this.pkg = pkg;
            this.id = id;
            this.text = text;
        }

        @Override public String pkg() { return pkg; }
        @Override public String viewId() { return id; }
        @Override public String className() { return "android.widget.TextView"; }
        @Override public String text() { return text; }
        @Override public String description() { return null; }
        @Override public boolean clickable() { return false; }
        @Override public boolean enabled() { return true; }
        @Override public boolean editable() { return false; }
        @Override public int childCount() { return 0; }
        @Override public UiNode child(int i) { return null; }
        @Override public boolean click() { return false; }
    }
}
