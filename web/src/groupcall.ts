// Group calls through the SFU (docs/sfu.md): signaling hands out a ticket
// (`group_call_start` / `group_call_join`), the page POSTs its offer to the
// SFU's join endpoint with the ticket's token, then answers the SFU's
// renegotiation offers on the `palaver` data channel. `ontrack`'s stream id
// names the participant; `active_speaker` names the loudest one.
//
// Video goes out as two simulcast layers (q: half size, f: full). Each
// tile asks the SFU for the quality its size needs (`video_quality`), and
// the SFU pauses layers nobody watches (`publish_layers`, dynacast). When
// ICE breaks (a new network), the page restarts ICE through the SFU's
// restart endpoint with the session token of `welcome`, keeping the call.

import type { Conn, Frame } from './ws';

export interface Tile {
  stream: MediaStream;
  account: number | null;
}

export interface GroupState {
  phase: 'idle' | 'incoming' | 'active';
  room: string | null;
  from: number | null;
  media: 'audio' | 'video';
  tiles: Map<string, Tile>;
  accounts: Map<string, number>; // stream id -> account
  speaker: string | null; // stream id
  me: string | null; // my stream id
  muted: boolean;
  cameraOff: boolean;
  local: MediaStream | null;
}

const IDLE: GroupState = {
  phase: 'idle', room: null, from: null, media: 'video', tiles: new Map(), accounts: new Map(),
  speaker: null, me: null, muted: false, cameraOff: false, local: null,
};

const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } };
const LAYERS: RTCRtpEncodingParameters[] = [
  { rid: 'q', scaleResolutionDownBy: 2, maxBitrate: 150_000 },
  { rid: 'f', maxBitrate: 500_000 },
];

export type Quality = 'off' | 'low' | 'medium' | 'high';

/** ICE still disconnected after this long: restart it. */
const RESTART_AFTER_MS = 3000;

export class GroupCalls {
  state: GroupState = IDLE;
  private pc: RTCPeerConnection | null = null;
  private channel: RTCDataChannel | null = null;
  private ticket: Frame | null = null;
  private session: string | null = null;
  private quality = new Map<string, Quality>();
  private restarting = false;
  private restartTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly onOnline = () => void this.restartIce();

  constructor(private conn: () => Conn | null, private changed: () => void) {}

  private set(patch: Partial<GroupState>) {
    this.state = { ...this.state, ...patch };
    this.changed();
  }

  /** Starts a call with `invite`, and every member of `group` when given. */
  async start(invite: number[], media: 'audio' | 'video', group?: number) {
    if (this.state.phase !== 'idle') throw new Error('already in a call');
    const frame: Frame = { type: 'group_call_start', invite, media };
    if (group !== undefined) frame.group = group;
    const ticket = await this.need().request(frame);
    await this.join(ticket, media);
  }

  async accept() {
    if (this.state.phase !== 'incoming' || !this.state.room) return;
    const ticket = await this.need().request({ type: 'group_call_join', room: this.state.room });
    await this.join(ticket, this.state.media);
  }

  decline() {
    this.state = IDLE;
    this.changed();
  }

  push(f: Frame): boolean {
    if (f.type !== 'group_call_incoming') return false;
    if (this.state.phase === 'idle') this.set({ ...IDLE, phase: 'incoming', room: f.room, from: f.from, media: f.media });
    return true;
  }

  private async join(ticket: Frame, media: 'audio' | 'video') {
    const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: media === 'video' ? VIDEO : false });
    this.set({ ...IDLE, phase: 'active', room: ticket.room, media, local, tiles: new Map(), accounts: new Map() });
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: ticket.ice_servers });
    this.pc = pc;
    this.ticket = ticket;
    this.quality.clear();
    for (const t of local.getTracks()) {
      const init: RTCRtpTransceiverInit = { direction: 'sendonly', streams: [local] };
      if (t.kind === 'video') init.sendEncodings = LAYERS.map((l) => ({ ...l }));
      pc.addTransceiver(t, init);
    }
    pc.oniceconnectionstatechange = () => this.iceChanged();
    window.addEventListener('online', this.onOnline);
    const channel = pc.createDataChannel('palaver');
    this.channel = channel;
    channel.onmessage = (ev) => void this.message(JSON.parse(String(ev.data)));
    pc.ontrack = (ev) => this.track(ev);
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`${ticket.sfu_url}/v1/rooms/${ticket.room}/join`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${ticket.token}`, 'Content-Type': 'application/sdp' },
      body: pc.localDescription!.sdp,
    });
    const body = await res.text();
    if (!res.ok) {
      this.leave();
      throw new Error(`cannot join the call: ${res.status} ${body}`);
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
  }

  private track(ev: RTCTrackEvent) {
    const id = ev.streams[0]?.id;
    if (!id) return;
    const tiles = new Map(this.state.tiles);
    const tile = tiles.get(id) ?? { stream: new MediaStream(), account: this.state.accounts.get(id) ?? null };
    tile.stream.addTrack(ev.track);
    ev.track.onended = () => this.drop(id);
    tiles.set(id, { ...tile });
    this.set({ tiles });
  }

  private drop(id: string) {
    const tiles = new Map(this.state.tiles);
    if (tiles.delete(id)) this.set({ tiles });
  }

  private know(p: { account: number; stream: string }) {
    const accounts = new Map(this.state.accounts);
    accounts.set(p.stream, p.account);
    const tiles = new Map(this.state.tiles);
    const t = tiles.get(p.stream);
    if (t) tiles.set(p.stream, { ...t, account: p.account });
    this.set({ accounts, tiles });
  }

  private async message(m: any) {
    switch (m.type) {
      case 'welcome':
        this.session = m.session ?? null;
        this.set({ me: m.you?.stream ?? null });
        for (const p of m.participants ?? []) this.know(p);
        break;
      case 'joined':
        this.know(m.participant);
        break;
      case 'left':
        this.drop(m.participant.stream);
        break;
      case 'active_speaker':
        this.set({ speaker: m.participant.stream });
        break;
      case 'publish_layers':
        await this.publishLayers(m.mid, m.active);
        break;
      case 'offer': {
        const pc = this.pc!;
        await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        this.channel?.send(JSON.stringify({ type: 'answer', sdp: pc.localDescription!.sdp }));
        break;
      }
    }
  }

  /** Dynacast: encode only the simulcast layers somebody receives. */
  private async publishLayers(mid: string, active: string[]) {
    const t = this.pc?.getTransceivers().find((x) => x.mid === mid);
    if (!t) return;
    const params = t.sender.getParameters();
    for (const e of params.encodings) e.active = active.includes(e.rid ?? '');
    await t.sender.setParameters(params);
  }

  /** The most this page wants of `stream`'s video (sent when it changes). */
  prefer(stream: string, quality: Quality) {
    if (this.quality.get(stream) === quality || this.channel?.readyState !== 'open') return;
    this.quality.set(stream, quality);
    this.channel.send(JSON.stringify({ type: 'video_quality', stream, quality }));
  }

  private iceChanged() {
    const s = this.pc?.iceConnectionState;
    clearTimeout(this.restartTimer);
    if (s === 'failed') void this.restartIce();
    else if (s === 'disconnected') this.restartTimer = setTimeout(() => void this.restartIce(), RESTART_AFTER_MS);
  }

  /** ICE restart (docs/sfu.md): new ICE credentials, same session. */
  async restartIce() {
    const pc = this.pc;
    if (!pc || !this.ticket || !this.session || this.restarting) return;
    if (pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed') return;
    this.restarting = true;
    try {
      if (pc.signalingState !== 'stable') await pc.setLocalDescription({ type: 'rollback' });
      pc.restartIce();
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      const res = await fetch(`${this.ticket.sfu_url}/v1/rooms/${this.ticket.room}/restart`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.session}`, 'Content-Type': 'application/sdp' },
        body: pc.localDescription!.sdp,
      });
      const body = await res.text();
      if (!res.ok) throw new Error(`${res.status} ${body}`);
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
    } catch (e) {
      console.warn('ICE restart failed', e);
    } finally {
      this.restarting = false;
    }
  }

  toggleMute() {
    const muted = !this.state.muted;
    this.state.local?.getAudioTracks().forEach((t) => (t.enabled = !muted));
    this.channel?.send(JSON.stringify({ type: 'mute', kind: 'audio', muted }));
    this.set({ muted });
  }

  toggleCamera() {
    const cameraOff = !this.state.cameraOff;
    this.state.local?.getVideoTracks().forEach((t) => (t.enabled = !cameraOff));
    this.channel?.send(JSON.stringify({ type: 'mute', kind: 'video', muted: cameraOff }));
    this.set({ cameraOff });
  }

  leave() {
    clearTimeout(this.restartTimer);
    window.removeEventListener('online', this.onOnline);
    this.ticket = null;
    this.session = null;
    if (this.channel?.readyState === 'open') this.channel.send(JSON.stringify({ type: 'leave' }));
    this.pc?.close();
    this.pc = null;
    this.channel = null;
    this.state.local?.getTracks().forEach((t) => t.stop());
    this.state = IDLE;
    this.changed();
  }

  private need(): Conn {
    const c = this.conn();
    if (!c) throw new Error('offline');
    return c;
  }
}
