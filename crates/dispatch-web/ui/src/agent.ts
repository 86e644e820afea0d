// The agent console: a gig agent signs in, goes available or away, sees an offer with its
// countdown, accepts or declines it with a reason, and completes assigned cases. The session is
// AgentService.OpenSession (a server stream) plus SendCommand calls into it: the same session
// and rules as the native apps' Connect stream.
import { Code } from "@connectrpc/connect";
import {
  AgentService,
  AgentStatus,
  Activity,
  Channel,
  SessionEndReason,
  Tier,
  AgentMessageSchema,
  type CaseSummary,
  type DispatcherMessage,
} from "../gen/dispatch/v1/dispatch_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { $, clock, connectTo, errorOf, retryable, show, type Credentials } from "./client";

type Command = NonNullable<MessageInitShape<typeof AgentMessageSchema>["command"]>;

let creds: Credentials | null = null;
let client: ReturnType<typeof connectTo<typeof AgentService>> | null = null;
let sessionId = "";
let abort: AbortController | null = null;
let heartbeat: number | undefined;
let requestSeq = 0;
let offer: { id: string; caseId: string; deadline: number } | null = null;
let countdownTimer: number | undefined;
const assigned = new Map<string, CaseSummary | null>();

const statusNames: Record<number, string> = {
  [AgentStatus.OFFLINE]: "offline",
  [AgentStatus.AVAILABLE]: "available",
  [AgentStatus.AWAY]: "away",
};
const activityNames: Record<number, string> = {
  [Activity.OFFLINE]: "offline",
  [Activity.AVAILABLE]: "ready for an offer",
  [Activity.BUSY]: "busy",
  [Activity.AWAY]: "away",
  [Activity.RECONNECTING]: "reconnecting",
};
const statusReasons: Record<string, string> = {
  signed_in: "Signed in. Go available to receive offers.",
  session_resumed: "Session resumed.",
  requested: "",
  missed_offers: "You were set away because offers went unanswered. Go available when you are ready.",
  presence_lost: "The connection was lost for too long: you were signed out.",
};
const revokeReasons: Record<string, string> = {
  timed_out: "The offer timed out: the case goes back to the queue.",
  cancelled: "The customer's case was cancelled.",
  disconnected: "The offer was withdrawn because the connection dropped.",
  agent_unavailable: "The offer was withdrawn because you went away.",
};

function tierName(t: Tier) { return t === Tier.VIP ? "VIP" : "standard"; }
function channelName(c: Channel) { return ({ [Channel.VOICE]: "voice", [Channel.CHAT]: "chat", [Channel.EMAIL]: "email" } as Record<number, string>)[c] ?? "any channel"; }

function note(text: string, kind = "") {
  const li = document.createElement("li");
  if (kind) li.dataset.kind = kind;
  const t = document.createElement("time");
  t.textContent = clock();
  li.append(t, document.createTextNode(text));
  $("notices").prepend(li);
}

function fail(text: string) {
  $("error").textContent = text;
  show("error", text !== "");
}

function setConnection(text: string, cls: string) {
  const el = $("connection");
  el.textContent = text;
  el.className = `pill ${cls}`;
}

async function send(command: Command): Promise<boolean> {
  if (!client || !sessionId) return false;
  try {
    await client.sendCommand({ sessionId, message: { requestId: `web-${++requestSeq}`, command } });
    fail("");
    return true;
  } catch (e) {
    const err = errorOf(e);
    fail(err.rawMessage || err.message);
    return false;
  }
}

function showOffer(id: string, c: CaseSummary, remainingMs: number) {
  offer = { id, caseId: c.caseId, deadline: performance.now() + remainingMs };
  const tier = $("offer-tier");
  tier.textContent = tierName(c.tier);
  tier.className = c.tier === Tier.VIP ? "pill vip" : "pill";
  $("offer-language").textContent = c.language;
  $("offer-channel").textContent = channelName(c.channel);
  $("offer-skills").textContent = c.requiredSkills.map((s) => `${s.skill} ≥ ${s.level}`).join(", ");
  $("offer-summary").textContent = c.summary || "(no summary)";
  $("offer-sentiment").textContent = c.sentiment.toFixed(2);
  $("offer-case").textContent = c.caseId;
  ($("decline-reason") as HTMLInputElement).value = "";
  show("offer", true);
  tick();
  clearInterval(countdownTimer);
  countdownTimer = window.setInterval(tick, 200);
}

function tick() {
  if (!offer) return;
  const left = Math.max(0, offer.deadline - performance.now());
  const el = $("countdown");
  el.textContent = `${Math.ceil(left / 1000)} s`;
  el.classList.toggle("low", left < 5000);
}

function hideOffer() {
  offer = null;
  clearInterval(countdownTimer);
  show("offer", false);
}

function renderCases() {
  const ul = $("assigned");
  ul.replaceChildren();
  for (const [caseId, c] of assigned) {
    const li = document.createElement("li");
    li.dataset.case = caseId;
    const title = document.createElement("div");
    title.innerHTML = "";
    const strong = document.createElement("strong");
    strong.textContent = caseId;
    title.append(strong);
    if (c) title.append(document.createTextNode(` · ${tierName(c.tier)} · ${c.language} · ${channelName(c.channel)}`));
    const summary = document.createElement("div");
    summary.className = "muted";
    summary.textContent = c?.summary ?? "";
    const row = document.createElement("div");
    row.className = "buttons";
    const outcome = document.createElement("input");
    outcome.className = "outcome";
    outcome.placeholder = "Outcome (e.g. refunded)";
    outcome.maxLength = 200;
    outcome.value = "resolved";
    const done = document.createElement("button");
    done.className = "complete primary";
    done.textContent = "Complete";
    done.onclick = async () => {
      done.disabled = true;
      if (await send({ case: "complete", value: { caseId, outcome: outcome.value.trim() || "resolved" } })) {
        assigned.delete(caseId);
        note(`Completed ${caseId}: ${outcome.value.trim() || "resolved"}.`, "completed");
        renderCases();
      } else {
        done.disabled = false;
      }
    };
    row.append(outcome, done);
    li.append(title, summary, row);
    ul.append(li);
  }
  show("no-cases", assigned.size === 0);
}

function handle(m: DispatcherMessage) {
  const ev = m.event;
  switch (ev.case) {
    case "opened":
      sessionId = ev.value.sessionId;
      clearInterval(heartbeat);
      heartbeat = window.setInterval(() => void send({ case: "heartbeat", value: {} }), Number(ev.value.heartbeatIntervalMs));
      setConnection("connected", "live");
      break;
    case "status": {
      const s = ev.value;
      const st = $("status");
      st.textContent = statusNames[s.status] ?? "—";
      st.className = `pill ${statusNames[s.status] ?? ""}`;
      $("activity").textContent = activityNames[s.activity] ?? "";
      const why = statusReasons[s.reason] ?? s.reason;
      $("status-reason").textContent = why;
      show("status-reason", why !== "");
      if (s.reason === "missed_offers") note("Set away after missed offers.", "missed");
      else if (s.reason !== "requested") note(`Status ${statusNames[s.status]} (${s.reason.replace("_", " ")}).`);
      for (const id of s.assignedCaseIds) if (!assigned.has(id)) assigned.set(id, null);
      if (s.reason === "signed_in" || s.reason === "session_resumed") {
        for (const id of [...assigned.keys()]) if (!s.assignedCaseIds.includes(id)) assigned.delete(id);
      }
      renderCases();
      break;
    }
    case "offer":
      showOffer(ev.value.offerId, ev.value.case!, Number(ev.value.remainingMs));
      note(`Offer for case ${ev.value.case?.caseId}.`, "offer");
      break;
    case "offerRevoked":
      if (offer?.id === ev.value.offerId) hideOffer();
      note(revokeReasons[ev.value.reason] ?? `Offer withdrawn (${ev.value.reason}).`, `revoked-${ev.value.reason}`);
      break;
    case "assignment":
      if (offer?.id === ev.value.offerId) hideOffer();
      assigned.set(ev.value.case!.caseId, ev.value.case!);
      note(`Case ${ev.value.case!.caseId} is yours.`, "assigned");
      renderCases();
      break;
    case "handedBack":
      assigned.delete(ev.value.caseId);
      note(`Case ${ev.value.caseId} was taken back (${ev.value.reason}).`, "handed-back");
      renderCases();
      break;
    case "activityWarning":
      note(`No activity on ${ev.value.caseId}: it goes back to the queue in ${Math.round(Number(ev.value.remainingMs) / 1000)} s unless you complete it.`, "warning");
      break;
    case "workingTime":
      note(`Working-time limit (${ev.value.limit}): no new offers for ${Math.round(Number(ev.value.resumeInMs) / 60000)} min.`, "working-time");
      break;
    case "ended": {
      const why = { [SessionEndReason.SIGNED_OUT]: "You signed out.", [SessionEndReason.REPLACED]: "You signed in on another device; this one stopped.", [SessionEndReason.REMOVED]: "Your account was removed from the roster." }[ev.value.reason as number] ?? "The session ended.";
      note(why, "ended");
      break;
    }
    default:
      break; // results are answered by SendCommand; explanations are not shown here
  }
}

async function runSession(): Promise<void> {
  let backoff = 500;
  while (creds && client) {
    const ctl = new AbortController();
    abort = ctl;
    let ended = false;
    try {
      setConnection("connecting", "");
      for await (const m of client.openSession({}, { signal: ctl.signal })) {
        backoff = 500;
        if (m.event.case === "ended") ended = true;
        handle(m);
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      const err = errorOf(e);
      clearInterval(heartbeat);
      sessionId = "";
      if (!retryable(err)) {
        fail(err.code === Code.Unauthenticated || err.code === Code.PermissionDenied ? `Not signed in: ${err.rawMessage}` : err.rawMessage);
        signedOut();
        return;
      }
      hideOffer();
      setConnection("reconnecting", "down");
      note(`Connection lost (${err.rawMessage}); reconnecting…`, "reconnecting");
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10_000);
      continue;
    }
    clearInterval(heartbeat);
    sessionId = "";
    if (ended || ctl.signal.aborted) {
      signedOut();
      return;
    }
  }
}

function signedOut() {
  creds = null;
  client = null;
  sessionId = "";
  clearInterval(heartbeat);
  hideOffer();
  assigned.clear();
  renderCases();
  setConnection("signed out", "");
  show("console", false);
  show("signin", true);
}

function signIn() {
  const agentId = ($("agent-id") as HTMLInputElement).value.trim();
  const token = ($("token") as HTMLTextAreaElement).value.trim();
  if (!agentId && !token) {
    fail("Enter your agent id (development mode) or paste your token.");
    return;
  }
  fail("");
  creds = token ? { token } : { agentId };
  client = connectTo(AgentService, creds);
  $("who").textContent = token ? "signed in with a token" : `agent ${agentId}`;
  show("signin", false);
  show("console", true);
  void runSession();
}

$("sign-in").onclick = signIn;
$("agent-id").onkeydown = (e) => { if ((e as KeyboardEvent).key === "Enter") signIn(); };
$("go-available").onclick = () => void send({ case: "setStatus", value: { status: AgentStatus.AVAILABLE } });
$("go-away").onclick = () => void send({ case: "setStatus", value: { status: AgentStatus.AWAY } });
$("sign-out").onclick = async () => {
  await send({ case: "setStatus", value: { status: AgentStatus.OFFLINE } });
  abort?.abort();
  signedOut();
};
$("accept").onclick = async () => {
  if (!offer) return;
  const id = offer.id;
  if (await send({ case: "accept", value: { offerId: id } }) && offer?.id === id) hideOffer();
};
$("decline").onclick = async () => {
  if (!offer) return;
  const { id, caseId } = offer;
  const reason = ($("decline-reason") as HTMLInputElement).value.trim() || "declined";
  if (await send({ case: "decline", value: { offerId: id, reason } })) {
    if (offer?.id === id) hideOffer();
    note(`Declined case ${caseId}: ${reason}.`, "declined");
  }
};
renderCases();
