//! `dispatchctl`: a small command-line client for the dispatcher — roster, cases, the agent
//! stream and the planner — with human-readable output or `--json`.

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use dispatch_grpc::client;
use dispatch_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use pb::escalation_service_client::EscalationServiceClient;
use pb::planner_service_client::PlannerServiceClient;
use pb::roster_service_client::RosterServiceClient;
use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Talk to a dispatcher.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Dispatcher address.
    #[arg(long, global = true, env = "DISPATCH_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Bearer token (JWT) sent with every call.
    #[arg(long, global = true, env = "DISPATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA that signed the server's certificate (for https:// addresses).
    #[arg(long, global = true, env = "DISPATCH_CA")]
    ca_cert: Option<String>,
    /// PEM client certificate, for mutual TLS.
    #[arg(long, global = true, env = "DISPATCH_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<String>,
    /// PEM client key, for mutual TLS.
    #[arg(long, global = true, env = "DISPATCH_CLIENT_KEY")]
    client_key: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The roster: register, show, list, remove agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Submit a case (as a routing service would).
    Submit(SubmitArgs),
    /// Show, cancel or watch a case.
    #[command(subcommand)]
    Case(CaseCmd),
    /// Act as an agent: open the stream, print what the dispatcher sends, read commands from
    /// standard input (`available`, `away`, `offline`, `accept OFFER`, `decline OFFER [reason]`,
    /// `complete CASE [outcome]`, `activity CASE`, `why CASE`, `me`, `policy`).
    Connect(ConnectArgs),
    /// Who is available now.
    Availability(AvailabilityArgs),
    /// How the queue is doing.
    Queue,
    /// Staffing for a forecast (Erlang C, and Erlang A with --patience): agents needed for the
    /// goal and what they achieve.
    WhatIf(WhatIfArgs),
    /// Why an agent gets no offers now, and its figures (today, the last seven days).
    ExplainAgent { agent: String },
    /// What decides who gets a case: the filters and weights in force, in words.
    AllocationPolicy,
    /// How evenly offers and engaged time spread over the agents, waits by tier, hand-backs.
    Fairness {
        /// Only agents speaking this language (primary subtag).
        #[arg(long, default_value = "")]
        lang: String,
        /// Window in UTC days, 1 to 7.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Demand and supply per segment: live rates, the agents who could take its cases, waits
    /// and the estimated wait of a new case, and the agents needed (Erlang C / A) next to those
    /// serving.
    Demand(DemandArgs),
    /// Invitations to offline agents to come online: open ones and how the others ended.
    Invitations {
        /// Only segments of this language.
        #[arg(long, default_value = "")]
        lang: String,
        /// Only open invitations.
        #[arg(long)]
        live: bool,
    },
    /// Why an agent may or may not be offered a case now: every rule it fails, in words.
    Why {
        /// The case (as the dispatcher names it).
        case: String,
        /// The agent.
        agent: String,
    },
    /// Mints an HS256 token for development and tests (production tokens come from your
    /// identity provider).
    DevToken(DevTokenArgs),
}

#[derive(Debug, Args)]
struct DemandArgs {
    /// Language (BCP 47; its primary subtag is used).
    #[arg(long)]
    lang: String,
    /// `standard` or `vip`; empty: both.
    #[arg(long, default_value = "")]
    tier: String,
    /// `voice`, `chat` or `email`; empty: every channel.
    #[arg(long, default_value = "")]
    channel: String,
    /// Segments requiring this skill (repeatable).
    #[arg(long = "skill")]
    skills: Vec<String>,
    /// Only the segment with exactly these skills (none: the one without required skills).
    #[arg(long)]
    exact: bool,
}

#[derive(Debug, Args)]
struct WhatIfArgs {
    /// Contacts expected per interval.
    #[arg(long)]
    arrivals: f64,
    /// Interval length in seconds.
    #[arg(long, default_value_t = 1800.0)]
    interval: f64,
    /// Mean handle time in seconds (talk plus wrap-up).
    #[arg(long)]
    handle: f64,
    /// Mean customer patience in seconds (adds Erlang A); 0: none.
    #[arg(long, default_value_t = 0.0)]
    patience: f64,
    /// Answer-time target in seconds.
    #[arg(long, default_value_t = 20.0)]
    target: f64,
    /// Share to answer within the target, in (0, 1].
    #[arg(long, default_value_t = 0.8)]
    service_level: f64,
    /// Share of paid time off the queue, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    shrinkage: f64,
    /// Most occupancy to plan for, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    max_occupancy: f64,
}

#[derive(Debug, Args)]
struct DevTokenArgs {
    /// File holding the shared secret (as in `[auth] keys`).
    #[arg(long)]
    secret_file: String,
    /// `agent`, `router`, `planner` or `admin`.
    #[arg(long)]
    role: String,
    /// Subject: the agent id for agents, a service name otherwise.
    #[arg(long)]
    sub: String,
    /// Tenant (routers).
    #[arg(long)]
    tenant: Option<String>,
    /// Key id.
    #[arg(long, default_value = "dev")]
    kid: String,
    #[arg(long, default_value = "dispatch")]
    issuer: String,
    #[arg(long, default_value = "dispatch")]
    audience: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Register or update an agent.
    Upsert(Box<UpsertArgs>),
    /// Show one agent.
    Get { id: String },
    /// List agents.
    List {
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
    /// Remove an agent.
    Remove { id: String },
}

#[derive(Debug, Args)]
struct UpsertArgs {
    /// Agent id.
    #[arg(long)]
    id: String,
    /// Display name.
    #[arg(long, default_value = "")]
    name: String,
    /// Language with proficiency, e.g. `de:5`; repeatable.
    #[arg(long = "lang", value_name = "TAG:LEVEL")]
    languages: Vec<String>,
    /// Skill with level, e.g. `disputes:4`; repeatable.
    #[arg(long = "skill", value_name = "SKILL:LEVEL")]
    skills: Vec<String>,
    /// VIP-certified.
    #[arg(long)]
    vip: bool,
    /// Capacity per channel, e.g. `chat:3`, `voice:1`; repeatable (default `chat:1`).
    #[arg(long = "capacity", value_name = "CHANNEL:N")]
    capacity: Vec<String>,
    /// Rating, 0 to 5.
    #[arg(long, default_value_t = 4.0)]
    rating: f64,
    /// A market the agent may serve (ISO 3166-1 alpha-2, e.g. `DE`); repeatable.
    #[arg(long = "market", value_name = "CC")]
    markets: Vec<String>,
    /// A data region the agent is cleared for (e.g. `eu`); repeatable.
    #[arg(long = "region")]
    regions: Vec<String>,
    /// Personal-data clearance, 0 to 5.
    #[arg(long, default_value_t = 0)]
    clearance: u32,
    /// A certification, optionally with its expiry in epoch milliseconds (`pci`, `vip:1767225600000`);
    /// repeatable.
    #[arg(long = "cert", value_name = "NAME[:EXPIRES_MS]")]
    certifications: Vec<String>,
    /// The agent's own limit of engaged time per UTC day, in hours (0: none).
    #[arg(long, default_value_t = 0.0)]
    max_hours_per_day: f64,
    /// The agent's own limit of engaged time over seven days, in hours (a visa's cap; 0: none).
    #[arg(long, default_value_t = 0.0)]
    max_hours_per_week: f64,
    /// Opt in to call-ins: at most this many invitations a local day (0: not opted in).
    #[arg(long, default_value_t = 0)]
    call_in_max_per_day: u32,
    /// Languages to be called in for (repeatable; none: any spoken).
    #[arg(long = "call-in-lang")]
    call_in_langs: Vec<String>,
    /// Quiet hours in local time, `HH:MM-HH:MM` (e.g. `22:00-07:00`).
    #[arg(long, default_value = "")]
    quiet: String,
    /// Local time's offset from UTC, minutes.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    utc_offset_min: i32,
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// Case id (your idempotency key).
    #[arg(long)]
    id: String,
    /// Customer language (BCP 47).
    #[arg(long = "lang")]
    language: String,
    /// Required skill with level, e.g. `disputes:3`; repeatable.
    #[arg(long = "skill", value_name = "SKILL:LEVEL")]
    skills: Vec<String>,
    /// Preferred skill with level; repeatable.
    #[arg(long = "prefer", value_name = "SKILL:LEVEL")]
    preferred: Vec<String>,
    /// `standard` or `vip`.
    #[arg(long, default_value = "standard")]
    tier: String,
    /// `voice`, `chat` or `email`.
    #[arg(long, default_value = "chat")]
    channel: String,
    /// 0 to 10.
    #[arg(long, default_value_t = 0)]
    priority: u32,
    /// The bot's summary.
    #[arg(long, default_value = "")]
    summary: String,
    /// The bot's sentiment, -1 to 1.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    sentiment: f64,
    /// Customer id.
    #[arg(long, default_value = "")]
    customer: String,
    /// The customer's previous agent.
    #[arg(long, default_value = "")]
    previous_agent: String,
    /// Minimum language proficiency (0: the dispatcher's default).
    #[arg(long, default_value_t = 0)]
    min_proficiency: u32,
    /// Expire after this long without an agent (0: never).
    #[arg(long, default_value_t = 0)]
    ttl_ms: u64,
    /// The customer's market (ISO 3166-1 alpha-2).
    #[arg(long, default_value = "")]
    market: String,
    /// The data region of the customer's personal data.
    #[arg(long, default_value = "")]
    region: String,
    /// Personal-data clearance the case needs, 0 to 5.
    #[arg(long, default_value_t = 0)]
    clearance: u32,
    /// A certification the agent must hold; repeatable.
    #[arg(long = "cert")]
    certifications: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum CaseCmd {
    /// State, offers with outcomes and why each agent was chosen.
    Get { id: String },
    /// Cancel.
    Cancel {
        id: String,
        #[arg(long, default_value = "cancelled by operator")]
        reason: String,
    },
    /// Follow the case's events until it ends.
    Watch { id: String },
    /// The customer's rating of a completed case (1 to 5).
    Rate {
        id: String,
        #[arg(long)]
        stars: u32,
        /// The agent could not influence it (a shipping delay, a policy complaint): kept, not
        /// counted toward the agent's reputation.
        #[arg(long)]
        not_agents_doing: bool,
    },
}

#[derive(Debug, Args)]
struct ConnectArgs {
    /// The agent to act as (development mode; with a token, the token's subject is the agent).
    #[arg(long = "as")]
    agent: Option<String>,
    /// Go available at once.
    #[arg(long)]
    available: bool,
    /// Accept every offer at once.
    #[arg(long)]
    auto_accept: bool,
    /// Exit after this many assignments (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    exit_after: u32,
}

#[derive(Debug, Args)]
struct AvailabilityArgs {
    /// Only agents speaking one of these; repeatable.
    #[arg(long = "lang")]
    languages: Vec<String>,
    /// With each skill at a level, e.g. `disputes:3`; repeatable.
    #[arg(long = "skill")]
    skills: Vec<String>,
    /// Only VIP-certified agents.
    #[arg(long)]
    vip: bool,
    /// Group by `language`, `skill`, `tier`, `activity` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    group_by: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(s) => eprintln!("error: {:?}: {}", s.code(), s.message()),
                None => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// A channel and the credentials to send on it.
#[derive(Clone)]
struct Conn {
    channel: Channel,
    bearer: client::Bearer,
}

fn dev_token(a: &DevTokenArgs) -> anyhow::Result<String> {
    let secret = std::fs::read(&a.secret_file).with_context(|| format!("reading {}", a.secret_file))?;
    let mut claims = client::TokenClaims::new(&a.role, &a.sub, a.tenant.as_deref(), a.ttl);
    claims.iss.clone_from(&a.issuer);
    claims.aud.clone_from(&a.audience);
    Ok(client::mint_token(&secret, &a.kid, &claims)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::DevToken(a) = &cli.cmd {
        println!("{}", dev_token(a)?);
        return Ok(());
    }
    let read =
        |p: &Option<String>| p.as_ref().map(|p| std::fs::read(p).with_context(|| format!("reading {p}"))).transpose();
    let tls = client::ClientTls {
        ca_pem: read(&cli.ca_cert)?,
        identity: match (read(&cli.client_cert)?, read(&cli.client_key)?) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        },
        domain: None,
    };
    let channel = client::channel_with(&cli.addr, &tls).await.with_context(|| format!("connecting to {}", cli.addr))?;
    let conn = Conn { channel, bearer: client::Bearer::new(cli.token.as_deref())? };
    let out = Out { json: cli.json };
    match cli.cmd {
        Cmd::Agent(c) => agent_cmd(conn, c, &out).await,
        Cmd::Submit(a) => submit(conn, a, &out).await,
        Cmd::Case(c) => case_cmd(conn, c, &out).await,
        Cmd::Connect(a) => connect(conn, a, &out).await,
        Cmd::Availability(a) => availability(conn, a, &out).await,
        Cmd::DevToken(_) => unreachable!("handled before connecting"),
        Cmd::Queue => {
            let mut planner = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
            let r = planner.get_queue_stats(pb::GetQueueStatsRequest {}).await?.into_inner();
            out.print(&r, || queue_table(&r))
        }
        Cmd::ExplainAgent { agent } => {
            let mut planner = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
            let r = planner.explain_agent(pb::ExplainAgentRequest { agent_id: agent }).await?.into_inner();
            out.print(&r, || explained_text(&r))
        }
        Cmd::Fairness { lang, days } => {
            let mut planner = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
            let r = planner.get_fairness(pb::GetFairnessRequest { language: lang, days }).await?.into_inner();
            out.print(&r, || {
                let mut s = format!(
                    "{} agents: {} offers (Gini {:.2}, top tenth {:.0} %), engaged {} min (Gini {:.2}), hand-backs {}\n",
                    r.agents,
                    r.offers,
                    r.offers_gini,
                    100.0 * r.offers_top_decile_share,
                    r.engaged_ms / 60_000,
                    r.engaged_gini,
                    r.hand_backs
                );
                for w in &r.waits {
                    s.push_str(&format!("  {:<8} assigned {} mean wait {:.1}s\n", tier_name(w.tier), w.assigned, w.mean_wait_ms / 1000.0));
                }
                for h in &r.top_hand_backs {
                    s.push_str(&format!("  hand-backs {:<16} {}\n", h.agent_id, h.hand_backs));
                }
                s.trim_end().to_owned()
            })
        }
        Cmd::AllocationPolicy => {
            let mut planner = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
            let r = planner.get_allocation_policy(pb::GetAllocationPolicyRequest {}).await?.into_inner();
            out.print(&r, || r.text.clone())
        }
        Cmd::Why { case, agent } => {
            let mut planner = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
            let r = planner
                .explain_match(pb::ExplainMatchRequest { case_id: case.clone(), agent_id: agent.clone() })
                .await?;
            let r = r.into_inner();
            out.print(&r, || {
                if r.eligible {
                    let total = r.score.as_ref().map_or(0.0, |s| s.total);
                    format!("{agent} may be offered {case} (score {total:.3})")
                } else {
                    let lines: Vec<String> =
                        r.failed.iter().map(|f| format!("  {:<22} {}", f.rule, f.detail)).collect();
                    format!("{agent} cannot be offered {case}:\n{}", lines.join("\n"))
                }
            })
        }
        Cmd::Demand(a) => {
            let mut planner = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
            let tier = match a.tier.as_str() {
                "" => pb::Tier::Unspecified,
                t => pb::Tier::from_str_name(&format!("TIER_{}", t.to_ascii_uppercase()))
                    .with_context(|| format!("unknown tier {t:?}"))?,
            };
            let channel = if a.channel.is_empty() { pb::Channel::Unspecified } else { channel_of(&a.channel)? };
            let segment = pb::SegmentQuery {
                language: a.lang,
                tier: tier as i32,
                channel: channel as i32,
                skills: a.skills,
                exact_skills: a.exact,
            };
            let r =
                planner.get_segment_demand(pb::GetSegmentDemandRequest { segment: Some(segment) }).await?.into_inner();
            out.print(&r, || demand_table(&r))
        }
        Cmd::Invitations { lang, live } => {
            let mut planner = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
            let r = planner
                .list_invitations(pb::ListInvitationsRequest { language: lang, live_only: live })
                .await?
                .into_inner();
            out.print(&r, || invitations_table(&r))
        }
        Cmd::WhatIf(a) => {
            let mut planner = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
            let request = pb::WhatIfStaffingRequest {
                arrivals: a.arrivals,
                interval_seconds: a.interval,
                handle_time_seconds: a.handle,
                patience_seconds: a.patience,
                target_answer_seconds: a.target,
                service_level: a.service_level,
                shrinkage: a.shrinkage,
                max_occupancy: a.max_occupancy,
            };
            let r = planner.what_if_staffing(request).await?.into_inner();
            out.print(&r, || what_if_table(&r))
        }
    }
}

struct Out {
    json: bool,
}

impl Out {
    fn print<T: serde::Serialize>(&self, v: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
        let text = if self.json { serde_json::to_string(v)? } else { table() };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")?;
        stdout.flush()?;
        Ok(())
    }
}

fn pair(s: &str, what: &str) -> anyhow::Result<(String, u32)> {
    let (a, b) = s.split_once(':').with_context(|| format!("{what} {s:?}: expected NAME:NUMBER"))?;
    Ok((a.to_owned(), b.parse().with_context(|| format!("{what} {s:?}: {b:?} is not a number"))?))
}

fn skills(v: &[String]) -> anyhow::Result<Vec<pb::SkillLevel>> {
    v.iter().map(|s| pair(s, "skill").map(|(skill, level)| pb::SkillLevel { skill, level })).collect()
}

fn channel_of(s: &str) -> anyhow::Result<pb::Channel> {
    pb::Channel::from_str_name(&format!("CHANNEL_{}", s.to_ascii_uppercase()))
        .with_context(|| format!("unknown channel {s:?}"))
}

fn enum_name<E: TryFrom<i32>>(v: i32, name: impl Fn(&E) -> &'static str, prefix: &str) -> String {
    E::try_from(v).map(|e| name(&e).trim_start_matches(prefix).to_ascii_lowercase()).unwrap_or_else(|_| v.to_string())
}

fn tier_name(v: i32) -> String {
    enum_name(v, pb::Tier::as_str_name, "TIER_")
}

fn state_name(v: i32) -> String {
    enum_name(v, pb::CaseState::as_str_name, "CASE_STATE_")
}

async fn agent_cmd(conn: Conn, cmd: AgentCmd, out: &Out) -> anyhow::Result<()> {
    let mut roster = RosterServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
    match cmd {
        AgentCmd::Upsert(a) => {
            let languages = a
                .languages
                .iter()
                .map(|l| {
                    pair(l, "language").map(|(language, proficiency)| pb::LanguageProficiency { language, proficiency })
                })
                .collect::<anyhow::Result<_>>()?;
            let caps = if a.capacity.is_empty() { vec!["chat:1".to_owned()] } else { a.capacity.clone() };
            let capacity = caps
                .iter()
                .map(|c| {
                    let (ch, n) = pair(c, "capacity")?;
                    Ok(pb::ChannelCapacity { channel: channel_of(&ch)? as i32, capacity: n })
                })
                .collect::<anyhow::Result<_>>()?;
            let profile = pb::AgentProfile {
                agent_id: a.id,
                display_name: a.name,
                languages,
                skills: skills(&a.skills)?,
                vip_certified: a.vip,
                capacity,
                rating: a.rating,
                markets: a.markets,
                data_regions: a.regions,
                clearance: a.clearance,
                certifications: a
                    .certifications
                    .iter()
                    .map(|c| {
                        let (name, expires) = c.split_once(':').unwrap_or((c, "0"));
                        let expires_at_ms = expires.parse().with_context(|| format!("--cert {c}: expiry in ms"))?;
                        Ok(pb::Certification { name: name.to_owned(), expires_at_ms, valid: false })
                    })
                    .collect::<anyhow::Result<_>>()?,
                work_limits: (a.max_hours_per_day > 0.0 || a.max_hours_per_week > 0.0).then(|| pb::WorkLimits {
                    max_per_day_ms: (a.max_hours_per_day * 3_600_000.0) as u64,
                    max_per_week_ms: (a.max_hours_per_week * 3_600_000.0) as u64,
                    ..Default::default()
                }),
                call_in: if a.call_in_max_per_day > 0 {
                    let (quiet_from_min, quiet_to_min) = quiet_hours(&a.quiet)?;
                    Some(pb::CallInPreferences {
                        languages: a.call_in_langs,
                        max_per_day: a.call_in_max_per_day,
                        quiet_from_min,
                        quiet_to_min,
                        utc_offset_min: a.utc_offset_min,
                    })
                } else {
                    None
                },
            };
            let r = roster.upsert_agent(pb::UpsertAgentRequest { profile: Some(profile) }).await?.into_inner();
            out.print(&r, || {
                let verb = if r.created { "registered" } else { "updated" };
                format!("{verb}\n{}", agents_table(r.agent.as_slice()))
            })
        }
        AgentCmd::Get { id } => {
            let r = roster.get_agent(pb::GetAgentRequest { agent_id: id }).await?.into_inner();
            out.print(&r, || agents_table(r.agent.as_slice()))
        }
        AgentCmd::List { page_size } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = roster.list_agents(pb::ListAgentsRequest { page_size, page_token: token }).await?.into_inner();
                all.extend(r.agents);
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            out.print(&all, || agents_table(&all))
        }
        AgentCmd::Remove { id } => {
            let r = roster.remove_agent(pb::RemoveAgentRequest { agent_id: id.clone() }).await?.into_inner();
            out.print(&r, || format!("removed {id}"))
        }
    }
}

fn agents_table(agents: &[pb::Agent]) -> String {
    let mut s = format!(
        "{:<16} {:<18} {:<16} {:<24} {:<4} {:<10} {:<10} {}\n",
        "AGENT", "NAME", "LANGUAGES", "SKILLS", "VIP", "STATUS", "ACTIVITY", "WORK"
    );
    for a in agents {
        let p = a.profile.clone().unwrap_or_default();
        let pr = a.presence.clone().unwrap_or_default();
        let langs: Vec<String> = p.languages.iter().map(|l| format!("{}:{}", l.language, l.proficiency)).collect();
        let sk: Vec<String> = p.skills.iter().map(|l| format!("{}:{}", l.skill, l.level)).collect();
        let mut work = format!(
            "offer={} cases={} hand_backs={} today={}min",
            if pr.pending_offer_id.is_empty() { "-" } else { &pr.pending_offer_id },
            pr.assigned_case_ids.len(),
            pr.hand_backs,
            pr.engaged_today_ms / 60_000
        );
        if !pr.capped_limit.is_empty() {
            work.push_str(&format!(" capped={}({}min)", pr.capped_limit, pr.capped_remaining_ms / 60_000));
        }
        s.push_str(&format!(
            "{:<16} {:<18} {:<16} {:<24} {:<4} {:<10} {:<10} {}\n",
            p.agent_id,
            p.display_name,
            langs.join(","),
            sk.join(","),
            if p.vip_certified { "yes" } else { "no" },
            enum_name(pr.status, pb::AgentStatus::as_str_name, "AGENT_STATUS_"),
            enum_name(pr.activity, pb::Activity::as_str_name, "ACTIVITY_"),
            work
        ));
    }
    s.trim_end().to_owned()
}

async fn submit(conn: Conn, a: SubmitArgs, out: &Out) -> anyhow::Result<()> {
    let tier = pb::Tier::from_str_name(&format!("TIER_{}", a.tier.to_ascii_uppercase()))
        .with_context(|| format!("unknown tier {:?}", a.tier))?;
    let spec = pb::CaseSpec {
        case_id: a.id,
        language: a.language,
        min_language_proficiency: a.min_proficiency,
        required_skills: skills(&a.skills)?,
        preferred_skills: skills(&a.preferred)?,
        tier: tier as i32,
        priority: a.priority,
        channel: channel_of(&a.channel)? as i32,
        summary: a.summary,
        sentiment: a.sentiment,
        customer_id: a.customer,
        previous_agent_id: a.previous_agent,
        ttl_ms: a.ttl_ms,
        market: a.market,
        data_region: a.region,
        required_clearance: a.clearance,
        required_certifications: a.certifications,
    };
    let r = EscalationServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone())
        .submit_case(pb::SubmitCaseRequest { spec: Some(spec) })
        .await?
        .into_inner();
    out.print(&r, || {
        let c = r.case.clone().unwrap_or_default();
        let verb = if r.created { "submitted" } else { "already submitted (same payload)" };
        let wait = if c.estimate.is_some() {
            format!("; estimated wait: {}", estimate_text(&c.estimate))
        } else {
            String::new()
        };
        format!("{verb}: case {} is {}{wait}", c.spec.map(|s| s.case_id).unwrap_or_default(), state_name(c.state))
    })
}

async fn case_cmd(conn: Conn, cmd: CaseCmd, out: &Out) -> anyhow::Result<()> {
    let mut esc = EscalationServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone());
    match cmd {
        CaseCmd::Get { id } => {
            let r = esc.get_case(pb::GetCaseRequest { case_id: id }).await?.into_inner();
            out.print(&r, || case_table(&r.case.clone().unwrap_or_default()))
        }
        CaseCmd::Cancel { id, reason } => {
            let r = esc.cancel_case(pb::CancelCaseRequest { case_id: id, reason }).await?.into_inner();
            out.print(&r, || case_table(&r.case.clone().unwrap_or_default()))
        }
        CaseCmd::Rate { id, stars, not_agents_doing } => {
            let request = pb::RateCaseRequest { case_id: id, rating: stars, agent_controllable: !not_agents_doing };
            let r = esc.rate_case(request).await?.into_inner();
            out.print(&r, || case_table(&r.case.clone().unwrap_or_default()))
        }
        CaseCmd::Watch { id } => {
            let mut stream = esc.watch_case(pb::WatchCaseRequest { case_id: id }).await?.into_inner();
            while let Some(ev) = stream.next().await {
                let ev = ev?;
                out.print(&ev, || {
                    format!(
                        "v{:<3} {:<16} state={:<10} agent={} offer={} {}{}",
                        ev.version,
                        enum_name(ev.kind, pb::CaseEventKind::as_str_name, "CASE_EVENT_KIND_"),
                        state_name(ev.state),
                        or_dash(&ev.agent_id),
                        or_dash(&ev.offer_id),
                        ev.reason,
                        if ev.estimate.is_some() {
                            format!(" wait {}", estimate_text(&ev.estimate))
                        } else {
                            String::new()
                        }
                    )
                })?;
            }
            Ok(())
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn case_table(c: &pb::Case) -> String {
    let spec = c.spec.clone().unwrap_or_default();
    let mut s = format!(
        "case {}  state={}  tier={}  lang={}  agent={}  waited={}ms  version={}\n",
        spec.case_id,
        state_name(c.state),
        tier_name(spec.tier),
        spec.language,
        or_dash(&c.current_agent_id),
        c.waited_ms,
        c.version
    );
    if c.estimate.is_some() {
        s.push_str(&format!("estimated wait: {}\n", estimate_text(&c.estimate)));
    }
    if !c.relaxations.is_empty() {
        s.push_str(&format!("relaxed: {}\n", c.relaxations.join(", ")));
    }
    if !c.outcome.is_empty() {
        s.push_str(&format!("outcome: {}\n", c.outcome));
    }
    if c.rating > 0 {
        let whose = if c.rating_agent_controllable { "the agent's doing" } else { "not the agent's doing" };
        s.push_str(&format!("rating: {} ({whose})\n", c.rating));
    }
    for o in &c.offers {
        s.push_str(&format!(
            "offer {} → {}  {}{}{}\n",
            o.offer_id,
            o.agent_id,
            enum_name(o.outcome, pb::OfferOutcome::as_str_name, "OFFER_OUTCOME_"),
            if o.reason.is_empty() { String::new() } else { format!(" ({})", o.reason) },
            if o.handed_back_at_ms > 0 { ", handed back" } else { "" }
        ));
        if let Some(e) = &o.explanation {
            let ex: Vec<String> = e.excluded.iter().map(|x| format!("{} {}", x.agents, x.rule)).collect();
            let ex = if ex.is_empty() { String::new() } else { format!(" (excluded: {})", ex.join(", ")) };
            s.push_str(&format!("  why: {} eligible{ex}; top candidates:\n", e.eligible));
            for cand in &e.candidates {
                let terms: Vec<String> =
                    cand.terms.iter().map(|t| format!("{}={:.2}×{:.1}", t.name, t.value, t.weight)).collect();
                s.push_str(&format!("    {:<14} {:>6.3}  {}\n", cand.agent_id, cand.total, terms.join(" ")));
            }
        }
    }
    s.trim_end().to_owned()
}

async fn connect(conn: Conn, a: ConnectArgs, out: &Out) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::AgentMessage>(16);
    let mut seq = 0u64;
    let mut msg = move |command: pb::agent_message::Command| {
        seq += 1;
        pb::AgentMessage { request_id: format!("r{seq}"), command: Some(command) }
    };
    use pb::agent_message::Command as C;
    if a.available {
        tx.send(msg(C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 }))).await?;
    }
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let req = match &a.agent {
        Some(id) => client::as_agent(id, stream)?,
        None => tonic::Request::new(stream),
    };
    let mut inbound = AgentServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone())
        .connect(req)
        .await?
        .into_inner();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut heartbeat = tokio::time::interval(std::time::Duration::from_secs(15));
    let mut assigned = 0u32;
    loop {
        tokio::select! {
            m = inbound.next() => {
                let Some(m) = m else { bail!("the dispatcher ended the stream; reconnect") };
                let m = m?;
                out.print(&m, || describe(&m))?;
                if let Some(pb::dispatcher_message::Event::Offer(o)) = &m.event
                    && a.auto_accept
                {
                    tx.send(msg(C::Accept(pb::Accept { offer_id: o.offer_id.clone() }))).await?;
                }
                if let Some(pb::dispatcher_message::Event::Assignment(_)) = &m.event {
                    assigned += 1;
                    if a.exit_after > 0 && assigned >= a.exit_after {
                        return Ok(());
                    }
                }
            }
            line = stdin.next_line(), if stdin_open => {
                let Some(line) = line? else { stdin_open = false; continue };
                let words: Vec<&str> = line.split_whitespace().collect();
                let cmd = match words.as_slice() {
                    [] => continue,
                    ["available"] => C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 }),
                    ["away"] => C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Away as i32 }),
                    ["offline"] => C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Offline as i32 }),
                    ["accept", o] => C::Accept(pb::Accept { offer_id: (*o).to_owned() }),
                    ["decline", o, rest @ ..] => C::Decline(pb::Decline { offer_id: (*o).to_owned(), reason: rest.join(" ") }),
                    ["complete", c, rest @ ..] => C::Complete(pb::Complete { case_id: (*c).to_owned(), outcome: rest.join(" ") }),
                    ["activity", c] => C::ReportActivity(pb::ReportActivity { case_id: (*c).to_owned() }),
                    ["why", c] => C::ExplainCase(pb::ExplainCase { case_id: (*c).to_owned() }),
                    ["me"] => C::ExplainMe(pb::ExplainMe {}),
                    ["policy"] => C::GetAllocationPolicy(pb::GetAllocationPolicy {}),
                    _ => { eprintln!("commands: available | away | offline | accept OFFER | decline OFFER [reason] | complete CASE [outcome] | activity CASE | why CASE | me | policy"); continue }
                };
                tx.send(msg(cmd)).await?;
            }
            _ = heartbeat.tick() => { tx.send(msg(C::Heartbeat(pb::Heartbeat {}))).await?; }
        }
    }
}

fn explained_text(e: &pb::ExplainAgentResponse) -> String {
    let mut s = String::new();
    for r in &e.reasons {
        s.push_str(&format!("{:<22} {}\n", r.code, r.detail));
    }
    for (label, f) in [("today", &e.today), ("last 7 days", &e.last_7_days)] {
        let f = f.unwrap_or_default();
        s.push_str(&format!(
            "{label}: offers {} (accepted {}, declined {}, missed {}), cases {}, engaged {} min\n",
            f.offers_received,
            f.offers_accepted,
            f.offers_declined,
            f.offers_missed,
            f.cases_handled,
            f.engaged_ms / 60_000
        ));
    }
    s.push_str(&format!(
        "rating {:.2} ({} ratings, {} you could influence), hand-backs {}",
        e.reputation, e.ratings_total, e.ratings_controllable, e.hand_backs
    ));
    s
}

fn describe(m: &pb::DispatcherMessage) -> String {
    use pb::dispatcher_message::Event;
    match &m.event {
        Some(Event::Offer(o)) => {
            let c = o.case.clone().unwrap_or_default();
            format!(
                "OFFER {} case={} lang={} tier={} skills=[{}] remaining={}ms: {}",
                o.offer_id,
                c.case_id,
                c.language,
                tier_name(c.tier),
                c.required_skills.iter().map(|s| format!("{}:{}", s.skill, s.level)).collect::<Vec<_>>().join(","),
                o.remaining_ms,
                c.summary
            )
        }
        Some(Event::OfferRevoked(r)) => format!("REVOKED {} case={} ({})", r.offer_id, r.case_id, r.reason),
        Some(Event::Assignment(a)) => {
            format!("ASSIGNED case={} offer={}", a.case.clone().unwrap_or_default().case_id, a.offer_id)
        }
        Some(Event::Status(s)) => format!(
            "STATUS {} activity={} ({}) assigned=[{}]",
            enum_name(s.status, pb::AgentStatus::as_str_name, "AGENT_STATUS_"),
            enum_name(s.activity, pb::Activity::as_str_name, "ACTIVITY_"),
            s.reason,
            s.assigned_case_ids.join(",")
        ),
        Some(Event::Result(r)) => {
            let code = tonic::Code::from_i32(r.code);
            if code == tonic::Code::Ok {
                format!("OK {}", r.request_id)
            } else {
                format!("ERROR {} {:?}: {}", r.request_id, code, r.message)
            }
        }
        Some(Event::Explanation(x)) => {
            let e = x.explanation.clone().unwrap_or_default();
            if e.eligible {
                format!("ELIGIBLE for case={}", x.case_id)
            } else {
                let why: Vec<String> = e.failed.iter().map(|f| format!("{}: {}", f.rule, f.detail)).collect();
                format!("NOT ELIGIBLE for case={}: {}", x.case_id, why.join("; "))
            }
        }
        Some(Event::Explained(e)) => explained_text(e),
        Some(Event::AllocationPolicy(p)) => p.text.clone(),
        Some(Event::WorkingTime(w)) => {
            format!(
                "WORKING_TIME_LIMIT {}: no offers for {}s; the work in hand finishes",
                w.limit,
                w.resume_in_ms / 1000
            )
        }
        Some(Event::HandedBack(h)) => format!("HANDED_BACK case={} offer={} ({})", h.case_id, h.offer_id, h.reason),
        Some(Event::ActivityWarning(w)) => {
            format!(
                "ACTIVITY_WARNING case={} handed back in {}ms unless you report activity",
                w.case_id, w.remaining_ms
            )
        }
        Some(Event::Ended(e)) => {
            format!("ENDED {}", enum_name(e.reason, pb::SessionEndReason::as_str_name, "SESSION_END_REASON_"))
        }
        Some(Event::Opened(o)) => format!("SESSION {} heartbeat every {}ms", o.session_id, o.heartbeat_interval_ms),
        None => "(empty message)".to_owned(),
    }
}

async fn availability(conn: Conn, a: AvailabilityArgs, out: &Out) -> anyhow::Result<()> {
    let group_by = a
        .group_by
        .iter()
        .map(|g| {
            pb::GroupBy::from_str_name(&format!("GROUP_BY_{}", g.to_ascii_uppercase()))
                .map(|g| g as i32)
                .with_context(|| format!("unknown grouping {g:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let filter = pb::AvailabilityFilter {
        languages: a.languages,
        min_language_proficiency: 0,
        skills: skills(&a.skills)?,
        vip_certified_only: a.vip,
        ..Default::default()
    };
    let r = PlannerServiceClient::with_interceptor(conn.channel.clone(), conn.bearer.clone())
        .get_availability(pb::GetAvailabilityRequest { filter: Some(filter), group_by })
        .await?
        .into_inner();
    out.print(&r, || {
        let rep = r.report.clone().unwrap_or_default();
        let row = |name: String, c: &pb::AvailabilityCounts| {
            format!(
                "{:<28} {:>10} {:>7} {:>9} {:>5} {:>5} {:>7}\n",
                name, c.registered, c.online, c.available, c.busy, c.away, c.offline
            )
        };
        let mut s = format!(
            "{:<28} {:>10} {:>7} {:>9} {:>5} {:>5} {:>7}\n",
            "GROUP", "REGISTERED", "ONLINE", "AVAILABLE", "BUSY", "AWAY", "OFFLINE"
        );
        for g in &rep.groups {
            let mut parts = vec![];
            for v in [&g.language, &g.skill, &g.tier] {
                if !v.is_empty() {
                    parts.push(v.clone());
                }
            }
            if g.activity != 0 {
                parts.push(enum_name(g.activity, pb::Activity::as_str_name, "ACTIVITY_"));
            }
            s.push_str(&row(parts.join("/"), &g.counts.unwrap_or_default()));
        }
        s.push_str(&row("total".to_owned(), &rep.total.unwrap_or_default()));
        s.trim_end().to_owned()
    })
}

/// `HH:MM-HH:MM` → minutes after midnight (empty: none).
fn quiet_hours(s: &str) -> anyhow::Result<(u32, u32)> {
    if s.is_empty() {
        return Ok((0, 0));
    }
    let minute = |t: &str| -> anyhow::Result<u32> {
        let (h, m) = t.split_once(':').with_context(|| format!("--quiet {s}: HH:MM-HH:MM"))?;
        Ok(h.parse::<u32>()? * 60 + m.parse::<u32>()?)
    };
    let (from, to) = s.split_once('-').with_context(|| format!("--quiet {s}: HH:MM-HH:MM"))?;
    Ok((minute(from)?, minute(to)?))
}

fn invitations_table(r: &pb::ListInvitationsResponse) -> String {
    if r.invitations.is_empty() {
        return "no invitations".to_owned();
    }
    r.invitations
        .iter()
        .map(|i| {
            format!(
                "{}  {:<12} {:<22} {:<12} sent={} expires={}{}{}",
                i.invitation_id,
                i.agent_id,
                i.segment,
                enum_name(i.outcome, pb::InvitationOutcome::as_str_name, "INVITATION_OUTCOME_"),
                i.sent_at_ms,
                i.expires_at_ms,
                if i.delivered_at_ms > 0 { " delivered" } else { "" },
                if i.incentive.is_empty() { String::new() } else { format!(" incentive={}", i.incentive) }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn estimate_text(e: &Option<pb::WaitEstimate>) -> String {
    match e {
        Some(e) if e.known => {
            format!(
                "{} ({}s; {} ahead, {} slots to free)",
                e.band_text,
                e.wait_ms / 1000,
                e.cases_ahead,
                e.slots_to_free
            )
        }
        Some(e) => e.band_text.clone(),
        None => "-".to_owned(),
    }
}

fn demand_table(r: &pb::GetSegmentDemandResponse) -> String {
    if r.segments.is_empty() {
        return "no segment saw cases in the last hour".to_owned();
    }
    let mut s = String::new();
    for d in &r.segments {
        let seg = d.segment.clone().unwrap_or_default();
        let sup = d.supply.unwrap_or_default();
        s.push_str(&format!(
            "{}\n  waiting {} (oldest {}s), a new case waits {}\n  agents: {} serving ({} free, {} of {} slots free), {} away\n",
            seg.key,
            d.waiting,
            d.oldest_wait_ms / 1000,
            estimate_text(&d.estimate),
            sup.serving,
            sup.free,
            sup.free_slots,
            sup.slots,
            sup.away
        ));
        for r in &d.rates {
            s.push_str(&format!(
                "  last {:>2} min: {} arrived ({:.1}/h), {} answered, {} gave up ({:.0}%), handle {:.0}s, accept {:.0}%\n",
                r.window_ms / 60_000,
                r.arrived,
                r.arrivals_per_hour,
                r.answered,
                r.abandoned,
                100.0 * r.abandonment,
                r.mean_handle_ms / 1000.0,
                100.0 * r.accept_ratio
            ));
        }
        if let Some(r) = d.rates.get(2).filter(|r| r.invited > 0 || d.invitations_pending > 0) {
            s.push_str(&format!(
                "  call-in: {} open; last hour {} invited, {} came online ({:.0}%, {:.0}s to sign in), {} declined, {} ignored\n",
                d.invitations_pending,
                r.invited,
                r.called_in,
                100.0 * r.conversion,
                r.mean_time_to_sign_in_ms / 1000.0,
                r.invitations_declined,
                r.invitations_ignored
            ));
        }
        if let Some(a) = &d.advice {
            let need = |o: &Option<pb::StaffingOutcome>| {
                o.as_ref().map_or("-".to_owned(), |o| {
                    if o.reachable { o.agents_scheduled.to_string() } else { "unreachable".to_owned() }
                })
            };
            s.push_str(&format!(
                "  target {:.0}% within {}s: need {} (Erlang C) / {} (Erlang A) for {:.2} Erlangs; shortfall {} / {}\n",
                100.0 * a.target_service_level,
                a.target_answer_ms / 1000,
                need(&a.erlang_c),
                need(&a.erlang_a),
                a.erlangs,
                a.shortfall_erlang_c,
                a.shortfall_erlang_a
            ));
        }
    }
    s.trim_end().to_owned()
}

fn what_if_table(r: &pb::WhatIfStaffingResponse) -> String {
    let mut s = format!("load {:.2} Erlangs\n", r.erlangs);
    for (model, o) in [("Erlang C", &r.erlang_c), ("Erlang A", &r.erlang_a)] {
        let Some(o) = o else { continue };
        if !o.reachable {
            s.push_str(&format!("{model}: not reachable with 100,000 agents\n"));
            continue;
        }
        s.push_str(&format!(
            "{model}: {} agents on the queue ({} scheduled): service level {:.1}%, average speed of answer {:.1}s, \
             waits {:.1}%, occupancy {:.1}%, give up {:.1}%\n",
            o.agents_on_queue,
            o.agents_scheduled,
            100.0 * o.service_level,
            o.average_speed_of_answer_ms / 1000.0,
            100.0 * o.probability_of_waiting,
            100.0 * o.occupancy,
            100.0 * o.abandonment
        ));
    }
    s
}

fn queue_table(r: &pb::GetQueueStatsResponse) -> String {
    let mut s = format!(
        "waiting={} offered={} assigned={} oldest_wait={}ms\n\
         submitted={} offers made={} accepted={} declined={} timed_out={} revoked={} \
         completed={} cancelled={} expired={} handed_back={} mean_time_to_accept={:.0}ms\n",
        r.waiting,
        r.offered,
        r.assigned,
        r.oldest_wait_ms,
        r.submitted_total,
        r.offers_made,
        r.offers_accepted,
        r.offers_declined,
        r.offers_timed_out,
        r.offers_revoked,
        r.completed_total,
        r.cancelled_total,
        r.expired_total,
        r.handed_back_total,
        r.mean_time_to_accept_ms
    );
    for g in &r.groups {
        s.push_str(&format!(
            "  {:<8} {:<8} waiting={} oldest={}ms\n",
            tier_name(g.tier),
            g.language,
            g.waiting,
            g.oldest_wait_ms
        ));
    }
    s.trim_end().to_owned()
}
