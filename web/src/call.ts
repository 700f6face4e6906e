// 1:1 calls over the signaling call frames (docs/protocol.md "1:1 calls"):
// the caller sends its offer, then learns its ICE servers (TURN credentials
// included) in `call_started`; `call_incoming` rings on every connected
// device of the callee; the first `call_accept` wins. Media is peer to peer
// or through TURN. Only the caller trickles before the answer, so the callee
// holds its candidates until its `call_accept` is done.

import type { Conn, Frame } from './ws';

export type Phase = 'idle' | 'outgoing' | 'incoming' | 'active';

export interface CallState {
  phase: Phase;
  call: number | null;
  peer: number | null;
  media: 'audio' | 'video';
  muted: boolean;
  cameraOff: boolean;
  local: MediaStream | null;
  remote: MediaStream | null;
}

const IDLE: CallState = { phase: 'idle', call: null, peer: null, media: 'video', muted: false, cameraOff: false, local: null, remote: null };

/** Small video: the machines that run many calls at once are small too. */
const VIDEO = { width: { ideal: 320 }, height: { ideal: 240 }, frameRate: { ideal: 15 } };

export class Calls {
  state: CallState = IDLE;
  private pc: RTCPeerConnection | null = null;
  private offer: Frame | null = null;
  private remoteIce: RTCIceCandidateInit[] = [];
  private localIce: string[] | null = null; // held until we may trickle
  private remoteSet = false;

  constructor(private conn: () => Conn | null, private changed: (ended?: string) => void) {}

  private set(patch: Partial<CallState>) {
    this.state = { ...this.state, ...patch };
    this.changed();
  }

  async start(peer: number, media: 'audio' | 'video') {
    if (this.state.phase !== 'idle') throw new Error('already in a call');
    const conn = this.need();
    const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: media === 'video' ? VIDEO : false });
    this.set({ ...IDLE, phase: 'outgoing', peer, media, local });
    const pc = this.connection();
    for (const t of local.getTracks()) pc.addTrack(t, local);
    const offer = await pc.createOffer();
    try {
      const started = await conn.request({ type: 'call_offer', to: peer, media, sdp: offer.sdp });
      this.set({ call: started.call });
      pc.setConfiguration({ iceServers: started.ice_servers });
      await pc.setLocalDescription(offer);
    } catch (e) {
      this.cleanup();
      throw e;
    }
  }

  async accept() {
    const f = this.offer;
    if (!f || this.state.phase !== 'incoming') return;
    const conn = this.need();
    const video = f.media === 'video';
    const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: video ? VIDEO : false });
    this.set({ local, phase: 'active' });
    this.localIce = [];
    const pc = this.connection(f.ice_servers);
    await pc.setRemoteDescription({ type: 'offer', sdp: f.sdp });
    await this.flushRemoteIce();
    for (const t of local.getTracks()) pc.addTrack(t, local);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await conn.request({ type: 'call_accept', call: f.call, sdp: answer.sdp });
    const held = this.localIce;
    this.localIce = null;
    for (const c of held) this.sendIce(c);
  }

  async reject() {
    const call = this.state.call;
    this.cleanup();
    if (call !== null) await this.conn()?.request({ type: 'call_reject', call }).catch(() => {});
  }

  async hangup() {
    const call = this.state.call;
    this.cleanup();
    if (call !== null) await this.conn()?.request({ type: 'call_hangup', call }).catch(() => {});
  }

  toggleMute() {
    const muted = !this.state.muted;
    this.state.local?.getAudioTracks().forEach((t) => (t.enabled = !muted));
    this.set({ muted });
  }

  toggleCamera() {
    const cameraOff = !this.state.cameraOff;
    this.state.local?.getVideoTracks().forEach((t) => (t.enabled = !cameraOff));
    this.set({ cameraOff });
  }

  /** Call pushes from the connection. */
  push(f: Frame): boolean {
    switch (f.type) {
      case 'call_incoming':
        if (this.state.phase !== 'idle') return true; // the server answers busy itself
        this.offer = f;
        this.remoteIce = [];
        this.remoteSet = false;
        this.set({ ...IDLE, phase: 'incoming', call: f.call, peer: f.from, media: f.media });
        return true;
      case 'call_accepted':
        if (f.call === this.state.call && this.pc) {
          this.set({ phase: 'active' });
          void this.pc.setRemoteDescription({ type: 'answer', sdp: f.sdp }).then(() => this.flushRemoteIce());
        }
        return true;
      case 'call_ice':
        if (f.call === this.state.call) void this.addRemoteIce(JSON.parse(f.candidate));
        return true;
      case 'call_answered_elsewhere':
      case 'call_ended':
        if (f.call === this.state.call) {
          this.cleanup();
          this.changed(f.type === 'call_ended' ? f.reason : 'answered on another device');
        }
        return true;
      case 'call_ringing':
      case 'call_peer':
      case 'call_sdp':
      case 'call_waiting':
        return true;
    }
    return false;
  }

  private need(): Conn {
    const c = this.conn();
    if (!c) throw new Error('offline');
    return c;
  }

  private connection(iceServers?: RTCIceServer[]): RTCPeerConnection {
    const pc = new RTCPeerConnection(iceServers ? { iceServers } : undefined);
    pc.onicecandidate = (ev) => {
      if (!ev.candidate) return;
      const c = JSON.stringify(ev.candidate.toJSON());
      if (this.localIce) this.localIce.push(c);
      else this.sendIce(c);
    };
    pc.ontrack = (ev) => {
      const remote = this.state.remote ?? new MediaStream();
      remote.addTrack(ev.track);
      this.set({ remote });
    };
    this.pc = pc;
    return pc;
  }

  private sendIce(candidate: string) {
    const call = this.state.call;
    if (call === null) return;
    this.conn()?.request({ type: 'call_ice', call, candidate }).catch((e) => console.warn('call_ice', e.message));
  }

  private async addRemoteIce(c: RTCIceCandidateInit) {
    if (!this.remoteSet || !this.pc) this.remoteIce.push(c);
    else await this.pc.addIceCandidate(c).catch((e) => console.warn('candidate', e.message));
  }

  private async flushRemoteIce() {
    this.remoteSet = true;
    const list = this.remoteIce;
    this.remoteIce = [];
    for (const c of list) await this.pc?.addIceCandidate(c).catch((e) => console.warn('candidate', e.message));
  }

  private cleanup() {
    this.pc?.close();
    this.pc = null;
    this.offer = null;
    this.remoteIce = [];
    this.localIce = null;
    this.remoteSet = false;
    this.state.local?.getTracks().forEach((t) => t.stop());
    this.state = IDLE;
    this.changed();
  }
}
