// End to end in a real headless browser (Debian's Chromium, driven by playwright-core): the
// agent console and the planner dashboard against a real dispatchd, with cases submitted and read
// back by dispatchctl. Run by tests/run.sh:
//   node tests/browser/consoles.mjs   (env: DISPATCHD, DISPATCHCTL, CHROMIUM, PLAYWRIGHT, OUT)
// Every wait is for an event on the page, bounded; screenshots go to $OUT.
import { spawn, execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set (tests/run.sh sets it)`);
  return process.env[k];
};
const { chromium } = await import(env("PLAYWRIGHT"));
const OUT = env("OUT");
mkdirSync(OUT, { recursive: true });
const BOUND = 15_000;
const OFFER_TIMEOUT_MS = 8_000;

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const grpcPort = await freePort();
const webPort = await freePort();
const addr = `http://127.0.0.1:${grpcPort}`;
const web = `http://127.0.0.1:${webPort}`;
let log = "";
function startDispatcher() {
  const child = spawn(env("DISPATCHD"), [
    "--dev", "--listen", `127.0.0.1:${grpcPort}`,
    "--set", `server.web.listen="127.0.0.1:${webPort}"`,
    "--set", `policy.offer_timeout_ms=${OFFER_TIMEOUT_MS}`,
    "--set", "policy.max_consecutive_misses=1",
    "--set", 'log.filter="info"',
  ], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  return child;
}
let server = startDispatcher();
async function register() {
  await ctl("agent", "upsert", "--id", "ana", "--name", "Ana", "--lang", "en:5", "--lang", "de:4", "--vip", "--capacity", "chat:2");
  await ctl("agent", "upsert", "--id", "ben", "--name", "Ben", "--lang", "de:5");
}

let browser;
let failed = false;
async function ctl(...args) {
  const { stdout } = await run(env("DISPATCHCTL"), ["--addr", addr, ...args], { timeout: BOUND });
  return stdout;
}
async function until(what, check) {
  const end = Date.now() + BOUND;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      if (Date.now() > end) throw new Error(`${what}: ${e}`);
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

try {
  await until("the dispatcher's web listener", async () => (await fetch(`${web}/agent/`)).ok);
  await register();

  browser = await chromium.launch({ executablePath: env("CHROMIUM"), args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
  const desk = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const agent = await phone.newPage();
  const planner = await desk.newPage();
  for (const [name, p] of [["agent", agent], ["planner", planner]]) {
    p.on("pageerror", (e) => { failed = true; console.error(`${name} page error: ${e}`); });
    p.on("console", (m) => { if (m.type() === "error") console.error(`${name} console: ${m.text()}`); });
  }
  const text = (p, sel) => p.locator(sel).innerText();

  // The planner's board is live before anyone signs in.
  await planner.goto(`${web}/planner/`);
  await planner.locator("#board").waitFor({ state: "visible", timeout: BOUND });
  await until("the availability watch", async () => (await text(planner, "#total-available")) === "0");
  check(true, "the dashboard shows 0 agents available");

  // Sign in by agent id (development mode).
  await agent.goto(`${web}/agent/`);
  await agent.fill("#agent-id", "ana");
  await agent.click("#sign-in");
  await until("signed in as away", async () => (await text(agent, "#status")) === "away");
  check((await text(agent, "#connection")) === "connected", "the agent console signs in (away) and is connected");
  await until("the planner to see ana online", async () => (await text(planner, "#total-online")) === "1");
  check((await text(planner, "#total-available")) === "0", "signed in but away is not available");

  await agent.click("#go-available");
  await until("available", async () => (await text(agent, "#status")) === "available");
  await until("the dashboard's available count to change", async () => (await text(planner, "#total-available")) === "1");
  const enRow = planner.locator('#by-language tr[data-key="en"] td').nth(1);
  await until("the by-language table", async () => (await enRow.innerText()) === "1");
  const vipRow = planner.locator('#by-tier tr[data-key="vip"] td').nth(1);
  await until("the by-tier table", async () => (await vipRow.innerText()) === "1");
  check(true, "the dashboard's numbers change when the agent goes available (total, by language, by tier)");

  // A VIP case appears as an offer with its summary and a countdown; accepted by clicking.
  await ctl("submit", "--id", "web-1", "--lang", "en", "--tier", "vip", "--summary", "Refund dispute: charged twice for order 7731", "--sentiment", "-0.6");
  await agent.locator("#offer").waitFor({ state: "visible", timeout: BOUND });
  check((await text(agent, "#offer-summary")).includes("charged twice"), "the offer shows the bot's summary");
  check((await text(agent, "#offer-tier")) === "VIP", "the offer shows the tier");
  check((await text(agent, "#offer-language")) === "en", "the offer shows the language");
  check((await text(agent, "#offer-sentiment")) === "-0.60", "the offer shows the sentiment");
  const first = Number((await text(agent, "#countdown")).replace(" s", ""));
  check(first > 0 && first <= OFFER_TIMEOUT_MS / 1000, `the countdown starts within the offer timeout (${first} s)`);
  await until("the countdown to run", async () => Number((await text(agent, "#countdown")).replace(" s", "")) < first);
  check(true, "the countdown runs");
  await agent.screenshot({ path: join(OUT, "agent-offer.png"), fullPage: true });
  await agent.click("#accept");
  const item = agent.locator('#assigned li[data-case="web-1"]');
  await item.waitFor({ state: "visible", timeout: BOUND });
  check(await agent.locator("#offer").isHidden(), "accepting hides the offer and lists the case as mine");
  await until("the planner's accepted count", async () => (await text(planner, "#offer-totals")).includes("1 accepted"));
  check(true, "the dashboard counts the accepted offer");
  await agent.screenshot({ path: join(OUT, "agent-assigned.png"), fullPage: true });

  await item.locator("input.outcome").fill("refunded");
  await item.locator("button.complete").click();
  await item.waitFor({ state: "detached", timeout: BOUND });
  await agent.locator("#notices li[data-kind=completed]").waitFor({ timeout: BOUND });
  const got = JSON.parse(await ctl("--json", "case", "get", "web-1"));
  const c = got.case ?? got;
  const last = c.offers[c.offers.length - 1];
  check(JSON.stringify(c.state).includes("COMPLETED") || c.state === 4, `GetCase shows the case completed (${c.state})`);
  check((last.agent_id ?? last.agentId) === "ana", "GetCase shows it completed by ana");
  check(c.outcome === "refunded", "with the outcome typed in the page");

  // A decline with a reason.
  await ctl("submit", "--id", "web-2", "--lang", "en", "--summary", "Where is my parcel?");
  await agent.locator("#offer").waitFor({ state: "visible", timeout: BOUND });
  check((await text(agent, "#offer-tier")) === "standard", "a standard offer");
  await agent.fill("#decline-reason", "not my product area");
  await agent.click("#decline");
  await agent.locator("#notices li[data-kind=declined]").waitFor({ timeout: BOUND });
  check((await text(agent, "#notices li[data-kind=declined]")).includes("not my product area"), "the decline and its reason are shown");
  check(await agent.locator("#offer").isHidden(), "the declined offer is gone");
  const declined = JSON.parse(await ctl("--json", "case", "get", "web-2"));
  const d = (declined.case ?? declined).offers.find((o) => (o.agent_id ?? o.agentId) === "ana");
  check(d && d.reason === "not my product area", "GetCase shows the decline reason");
  await ctl("case", "cancel", "web-2");

  // An offer left unanswered times out; with max_consecutive_misses=1 the agent is set away.
  await ctl("submit", "--id", "web-3", "--lang", "en", "--summary", "Password reset loop");
  await agent.locator("#offer").waitFor({ state: "visible", timeout: BOUND });
  await agent.locator("#notices li[data-kind=revoked-timed_out]").waitFor({ timeout: OFFER_TIMEOUT_MS + BOUND });
  check(await agent.locator("#offer").isHidden(), "the timed-out offer is taken off the screen");
  check((await text(agent, "#notices li[data-kind=revoked-timed_out]")).includes("timed out"), "the timeout is shown");
  await until("set away", async () => (await text(agent, "#status")) === "away");
  check((await text(agent, "#status-reason")).includes("unanswered"), "the console says why the agent was set away");
  await until("the planner's timed-out count", async () => (await text(planner, "#offer-totals")).includes("1 timed out"));
  check(true, "the dashboard counts the timed-out offer");
  await agent.screenshot({ path: join(OUT, "agent-timed-out.png"), fullPage: true });

  // Waiting cases by tier, and the segment's shortfall: a German VIP case nobody can take.
  await ctl("submit", "--id", "web-4", "--lang", "de", "--tier", "vip", "--summary", "Kündigung, sehr verärgert");
  await until("the waiting VIP case", async () => (await text(planner, "#vip-waiting")) === "1");
  await until("the segment table", async () => (await planner.locator('#segments tr[data-key^="de/vip"]').count()) > 0);
  check(true, "the dashboard shows the waiting VIP case and its segment");
  await planner.screenshot({ path: join(OUT, "planner.png"), fullPage: true });

  // Reconnect: the dispatcher restarts; the console says so and comes back by itself.
  const exited = new Promise((r) => server.once("exit", r));
  server.kill("SIGTERM");
  await exited;
  await agent.locator("#notices li[data-kind=reconnecting]").waitFor({ timeout: BOUND });
  check((await text(agent, "#connection")) === "reconnecting", "the console shows the lost connection");
  server = startDispatcher();
  await until("the restarted dispatcher", async () => (await fetch(`${web}/agent/`)).ok);
  await register(); // the development store is in memory: the roster is gone with the process
  await until("reconnected", async () => (await text(agent, "#connection")) === "connected");
  await until("signed in again", async () => (await text(agent, "#status")) === "away");
  check(true, "the console reconnects by itself and the agent is signed in again");

  // Signing out.
  await agent.click("#sign-out");
  await agent.locator("#signin").waitFor({ state: "visible", timeout: BOUND });
  await until("the planner to see ana offline", async () => (await text(planner, "#total-online")) === "0");
  check(true, "signing out in the console signs the agent out");
  console.log(`screenshots in ${OUT}`);
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack ?? e}`);
  writeFileSync(join(OUT, "dispatchd.log"), log);
  console.error(`dispatchd's log: ${join(OUT, "dispatchd.log")}`);
} finally {
  if (browser) await browser.close();
  server.kill("SIGTERM");
}
process.exit(failed ? 1 : 0);
