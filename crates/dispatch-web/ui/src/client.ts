// The consoles' one way to the dispatcher: the generated dispatch.v1 clients over gRPC-Web, to
// the origin that served the page, with the caller's credentials on every call.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";

export type Credentials = { agentId?: string; token?: string };

export function connectTo<T extends DescService>(service: T, creds: Credentials): Client<T> {
  const auth: Interceptor = (next) => async (req) => {
    if (creds.token) req.header.set("authorization", `Bearer ${creds.token.replace(/^Bearer\s+/i, "").trim()}`);
    if (creds.agentId) req.header.set("agent-id", creds.agentId);
    return next(req);
  };
  const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [auth] });
  return createClient(service, transport);
}

export function errorOf(e: unknown): ConnectError {
  return ConnectError.from(e);
}

// Whether retrying can help (the dispatcher restarting, the network, a load shed).
export function retryable(e: ConnectError): boolean {
  return [Code.Unavailable, Code.Unknown, Code.Internal, Code.ResourceExhausted, Code.DeadlineExceeded, Code.Aborted].includes(e.code);
}

export function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el;
}

export function show(id: string, visible: boolean) {
  $(id).hidden = !visible;
}

export function duration(ms: number): string {
  if (!isFinite(ms) || ms <= 0) return "0 s";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function clock(d = new Date()): string {
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}
