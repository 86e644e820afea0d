// The planner dashboard: availability live (PlannerService.WatchAvailability, by language and by
// tier eligibility), the queue (GetQueueStats every 2 s), offers made, accepted and timed out
// and the time to accept over the last 10 minutes as a chart (uPlot), and supply against demand
// per segment with the call-ins (GetSegmentDemand, ListInvitations).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./planner.css";
import {
  PlannerService,
  GroupBy,
  InvitationOutcome,
  Channel,
  Tier,
  type AvailabilityReport,
  type GetQueueStatsResponse,
  type SegmentDemand,
} from "../gen/dispatch/v1/dispatch_pb";
import { $, clock, connectTo, duration, errorOf, retryable, show, type Credentials } from "./client";

const BUCKET_MS = 10_000;
const WINDOW_MS = 10 * 60_000;

let client: ReturnType<typeof connectTo<typeof PlannerService>> | null = null;
let generation = 0;
const languages = new Set<string>();

function fail(text: string) {
  $("error").textContent = text;
  show("error", text !== "");
}

function setConnection(text: string, cls: string) {
  const el = $("connection");
  el.textContent = text;
  el.className = `pill ${cls}`;
}

function cells(tr: HTMLTableRowElement, values: (string | number)[], cls: (string | undefined)[] = []) {
  values.forEach((v, i) => {
    const td = document.createElement("td");
    td.textContent = String(v);
    if (cls[i]) td.className = cls[i]!;
    tr.append(td);
  });
}

function fill(tableId: string, rows: { key?: string; values: (string | number)[]; cls?: (string | undefined)[] }[]) {
  const body = ($(tableId) as HTMLTableElement).tBodies[0]!;
  body.replaceChildren(
    ...rows.map((r) => {
      const tr = document.createElement("tr");
      if (r.key) tr.dataset.key = r.key;
      cells(tr, r.values, r.cls);
      return tr;
    }),
  );
}

// --- availability -------------------------------------------------------------------------

function byLanguage(r: AvailabilityReport) {
  const t = r.total!;
  $("total-available").textContent = String(t.available);
  $("total-busy").textContent = String(t.busy);
  $("total-away").textContent = String(t.away);
  $("total-online").textContent = String(t.online);
  const groups = [...r.groups].sort((a, b) => Number(b.counts!.online - a.counts!.online) || a.language.localeCompare(b.language));
  for (const g of groups) languages.add(g.language);
  fill("by-language", groups.map((g) => ({ key: g.language, values: [g.language, g.counts!.available.toString(), g.counts!.busy.toString(), g.counts!.away.toString(), g.counts!.reconnecting.toString(), g.counts!.offline.toString()] })));
}

function byTier(r: AvailabilityReport) {
  const order = ["vip", "standard"];
  const groups = [...r.groups].sort((a, b) => order.indexOf(a.tier) - order.indexOf(b.tier));
  fill("by-tier", groups.map((g) => ({ key: g.tier, values: [g.tier === "vip" ? "VIP-certified" : "standard only", g.counts!.available.toString(), g.counts!.busy.toString(), g.counts!.away.toString(), g.counts!.offline.toString()] })));
}

async function watch(group: GroupBy, render: (r: AvailabilityReport) => void, gen: number) {
  let backoff = 500;
  while (client && gen === generation) {
    try {
      for await (const r of client.watchAvailability({ groupBy: [group], intervalMs: 1000 })) {
        if (gen !== generation) return;
        backoff = 500;
        setConnection("live", "live");
        fail("");
        render(r);
      }
    } catch (e) {
      if (gen !== generation) return;
      const err = errorOf(e);
      if (!retryable(err)) return unauthorised(err.rawMessage);
      setConnection("reconnecting", "down");
      await new Promise((res) => setTimeout(res, backoff));
      backoff = Math.min(backoff * 2, 10_000);
    }
  }
}

// --- queue and offers chart ---------------------------------------------------------------

type Sample = { at: number; made: number; accepted: number; timedOut: number; acceptMsTotal: number };
const samples: Sample[] = [];
let chart: uPlot | null = null;

function queue(q: GetQueueStatsResponse) {
  const tiers = { vip: { waiting: 0, oldest: 0 }, standard: { waiting: 0, oldest: 0 } };
  for (const g of q.groups) {
    const t = g.tier === Tier.VIP ? tiers.vip : tiers.standard;
    t.waiting += Number(g.waiting);
    t.oldest = Math.max(t.oldest, Number(g.oldestWaitMs));
    languages.add(g.language);
  }
  $("vip-waiting").textContent = String(tiers.vip.waiting);
  $("vip-oldest").textContent = tiers.vip.waiting ? duration(tiers.vip.oldest) : "–";
  $("std-waiting").textContent = String(tiers.standard.waiting);
  $("std-oldest").textContent = tiers.standard.waiting ? duration(tiers.standard.oldest) : "–";
  const groups = [...q.groups].sort((a, b) => b.tier - a.tier || Number(b.oldestWaitMs - a.oldestWaitMs));
  fill("waiting", groups.map((g) => ({ values: [g.tier === Tier.VIP ? "VIP" : "standard", g.language, g.waiting.toString(), duration(Number(g.oldestWaitMs))] })));
  const accepted = Number(q.offersAccepted);
  samples.push({ at: Date.now(), made: Number(q.offersMade), accepted, timedOut: Number(q.offersTimedOut), acceptMsTotal: q.meanTimeToAcceptMs * accepted });
  while (samples.length > 2 && samples[1]!.at < Date.now() - WINDOW_MS - BUCKET_MS) samples.shift();
  $("offer-totals").textContent = `· since start: ${q.offersMade} made, ${q.offersAccepted} accepted, ${q.offersDeclined} declined, ${q.offersTimedOut} timed out`;
  drawChart();
}

// Per 10-second bucket: offers made, accepted and timed out in it, and the mean time to accept
// of the offers accepted in it (from the differences of the dispatcher's counters).
function series(): number[][] {
  const now = Date.now();
  const xs: number[] = [], made: number[] = [], acc: number[] = [], tout: number[] = [], tta: (number | null)[] = [];
  const at = (t: number) => { let s: Sample | undefined; for (const x of samples) if (x.at <= t) s = x; return s; };
  for (let end = now - WINDOW_MS + BUCKET_MS; end <= now; end += BUCKET_MS) {
    const a = at(end - BUCKET_MS), b = at(end);
    xs.push(Math.round(end / 1000));
    if (!a || !b) { made.push(0); acc.push(0); tout.push(0); tta.push(null); continue; }
    made.push(b.made - a.made);
    acc.push(b.accepted - a.accepted);
    tout.push(b.timedOut - a.timedOut);
    const n = b.accepted - a.accepted;
    tta.push(n > 0 ? (b.acceptMsTotal - a.acceptMsTotal) / n / 1000 : null);
  }
  return [xs, made, acc, tout, tta as number[]];
}

function drawChart() {
  const data = series() as uPlot.AlignedData;
  if (chart) {
    chart.setData(data);
    return;
  }
  const el = $("chart");
  chart = new uPlot(
    {
      width: Math.max(300, el.clientWidth),
      height: 240,
      scales: { x: { time: true }, n: { auto: true, range: (_u, _min, max) => [0, Math.max(4, max)] }, s: { auto: true, range: (_u, _min, max) => [0, Math.max(5, max ?? 5)] } },
      axes: [{}, { scale: "n", label: "offers / 10 s" }, { scale: "s", side: 1, label: "time to accept, s", grid: { show: false } }],
      series: [
        {},
        { label: "made", scale: "n", stroke: "#1f6feb", width: 2, points: { show: false } },
        { label: "accepted", scale: "n", stroke: "#2e7d32", width: 2, points: { show: false } },
        { label: "timed out", scale: "n", stroke: "#c62828", width: 2, points: { show: false } },
        { label: "time to accept", scale: "s", stroke: "#8a5a00", dash: [4, 4], width: 2, spanGaps: false, points: { size: 6 } },
      ],
    },
    data,
    el,
  );
  window.addEventListener("resize", () => chart?.setSize({ width: Math.max(300, el.clientWidth), height: 240 }));
}

// --- segments and call-ins ----------------------------------------------------------------

function segmentName(d: SegmentDemand) {
  const s = d.segment!;
  const ch = ({ [Channel.VOICE]: "voice", [Channel.CHAT]: "chat", [Channel.EMAIL]: "email" } as Record<number, string>)[s.channel] ?? "any";
  return `${s.language} · ${s.tier === Tier.VIP ? "VIP" : "standard"} · ${ch}${s.skills.length ? ` · ${s.skills.join("+")}` : ""}`;
}

async function segments(gen: number) {
  if (!client) return;
  const all: SegmentDemand[] = [];
  for (const language of [...languages].filter((l) => l).slice(0, 40)) {
    const r = await client.getSegmentDemand({ segment: { language } });
    all.push(...r.segments);
  }
  if (gen !== generation) return;
  all.sort((a, b) => (b.advice?.shortfallErlangA ?? 0) - (a.advice?.shortfallErlangA ?? 0) || b.waiting - a.waiting);
  fill("segments", all.slice(0, 30).map((d) => {
    const short = d.advice?.shortfallErlangA ?? 0;
    const needed = d.advice?.erlangA?.agentsScheduled;
    return {
      key: d.segment!.key,
      values: [segmentName(d), d.waiting, d.estimate?.known ? d.estimate.bandText : "no agent", d.supply?.serving ?? 0, needed === undefined ? "–" : needed, short, d.invitationsPending],
      cls: [undefined, undefined, undefined, undefined, undefined, short > 0 ? "short" : undefined, undefined],
    };
  }));
  const inv = await client.listInvitations({});
  if (gen !== generation) return;
  const outcome: Record<number, string> = { [InvitationOutcome.PENDING]: "pending", [InvitationOutcome.CAME_ONLINE]: "came online", [InvitationOutcome.DECLINED]: "declined", [InvitationOutcome.IGNORED]: "ignored" };
  fill("invitations", inv.invitations.slice(0, 20).map((i) => ({ values: [i.displayName || i.agentId, i.segment, clock(new Date(Number(i.sentAtMs))), outcome[i.outcome] ?? "–"] })));
}

// --- wiring -------------------------------------------------------------------------------

async function poll(gen: number) {
  let n = 0;
  while (client && gen === generation) {
    try {
      queue(await client.getQueueStats({}));
      if (n++ % 3 === 0) await segments(gen);
    } catch (e) {
      const err = errorOf(e);
      if (!retryable(err)) return unauthorised(err.rawMessage);
      setConnection("reconnecting", "down");
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

function unauthorised(message: string) {
  generation++;
  client = null;
  setConnection("not connected", "down");
  fail(`Not connected: ${message}`);
  show("board", false);
  show("auth", true);
}

function start(creds: Credentials) {
  const gen = ++generation;
  client = connectTo(PlannerService, creds);
  show("auth", false);
  show("board", true);
  void watch(GroupBy.LANGUAGE, byLanguage, gen);
  void watch(GroupBy.TIER, byTier, gen);
  void poll(gen);
}

$("connect").onclick = () => {
  const token = ($("token") as HTMLTextAreaElement).value.trim();
  fail("");
  start(token ? { token } : {});
};
// Development mode needs no token: try without, and ask for one if refused.
start({});
