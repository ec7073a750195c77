package net.rcsgate.phone.sms;

import java.util.ArrayList;
import java.util.List;

/** The platform's SMS for tests: records sends, answers nothing by itself. */
final class FakeSms implements SmsPlatform {
    boolean canSend = true;
    final List<Sim> sims = new ArrayList<>();
    final List<String> sends = new ArrayList<>(); // "sub to parts id"
    int partLen = 160;
    SendException refuse;
    boolean inProvider;

    @Override public boolean canSend() { return canSend; }
    @Override public List<Sim> sims() { return sims; }

    @Override
    public ArrayList<String> divide(int subscriptionId, String text) {
        ArrayList<String> out = new ArrayList<>();
        for (int i = 0; i < text.length(); i += partLen) out.add(text.substring(i, Math.min(text.length(), i + partLen)));
        return out;
    }

    @Override
    public void send(int subscriptionId, String to, ArrayList<String> parts, String id, boolean deliveryReports) throws SendException {
        if (refuse != null) throw refuse;
        sends.add(subscriptionId + " " + to + " " + parts.size() + " " + id);
    }

    @Override
    public boolean sentInProvider(String to, String text, long sinceMillis) {
        return inProvider;
    }
}
