// The W3C traceparent module and the access log's choice of request ids.
import { Metadata } from '@grpc/grpc-js';
import { expect } from 'chai';
import { requestIds } from '../../common/observe.js';
import {
  currentSpan,
  currentTraceparent,
  formatTraceparent,
  itemTraceFields,
  newSpan,
  outgoingMetadata,
  parseTraceparent,
  runForBatch,
  runInSpan,
  serverSpan,
} from '../../common/trace.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';

describe('traceparent', () => {
  it('parses the example of the W3C spec and formats it back', () => {
    const ctx = parseTraceparent(`00-${TRACE}-${SPAN}-01`);
    expect(ctx).to.deep.equal({ traceId: TRACE, spanId: SPAN, flags: 1 });
    expect(formatTraceparent(ctx!)).to.equal(`00-${TRACE}-${SPAN}-01`);
  });

  it('refuses what the spec says to ignore: zero ids, version ff, extra fields in version 00, bad hex', () => {
    for (const bad of [
      `00-${'0'.repeat(32)}-${SPAN}-01`,
      `00-${TRACE}-${'0'.repeat(16)}-01`,
      `ff-${TRACE}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-01-extra`,
      `00-${TRACE.toUpperCase()}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}`,
      '',
      undefined,
    ]) {
      expect(parseTraceparent(bad), String(bad)).to.equal(undefined);
    }
  });

  it('accepts a later version with more fields, reading the first four', () => {
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-00-future`)).to.deep.equal({ traceId: TRACE, spanId: SPAN, flags: 0 });
  });

  it('continues the caller\'s trace in a new span on the server side, or starts one', () => {
    const md = new Metadata();
    md.set('traceparent', `00-${TRACE}-${SPAN}-01`);
    const span = serverSpan(md);
    expect(span).to.include({ traceId: TRACE, parentSpanId: SPAN, flags: 1 });
    expect(span.spanId).to.match(/^[0-9a-f]{16}$/).and.not.equal(SPAN);
    const fresh = serverSpan(new Metadata());
    expect(fresh.traceId).to.match(/^[0-9a-f]{32}$/).and.not.equal(TRACE);
    expect(fresh.parentSpanId).to.equal(undefined);
  });

  it('holds the span across awaits and puts a child of it on outgoing calls', async () => {
    const span = newSpan();
    await runInSpan(span, async () => {
      await new Promise((r) => setTimeout(r, 1));
      expect(currentSpan()).to.equal(span);
      expect(currentTraceparent()).to.equal(formatTraceparent(span));
      const out = parseTraceparent(outgoingMetadata().get('traceparent')[0]);
      expect(out?.traceId).to.equal(span.traceId);
      expect(out?.spanId).to.not.equal(span.spanId);
    });
    expect(currentSpan()).to.equal(undefined);
    expect(currentTraceparent()).to.equal('');
  });

  it('runs a batch send in its first item\'s trace, or a new one', () => {
    const first = `00-${TRACE}-${SPAN}-01`;
    expect(runForBatch(first, () => currentSpan()?.traceId)).to.equal(TRACE);
    expect(runForBatch(undefined, () => currentSpan()?.traceId)).to.match(/^[0-9a-f]{32}$/);
  });

  it('names an item\'s own trace in its log fields', () => {
    expect(itemTraceFields(`00-${TRACE}-${SPAN}-01`)).to.deep.equal({ trace_id: TRACE, parent_span_id: SPAN });
    expect(itemTraceFields(undefined)).to.deep.equal({});
  });
});

describe('access log ids', () => {
  it('takes id fields and counts batches, naming their first ids, never other fields', () => {
    expect(requestIds({ requestId: 'r1', accountId: 'a1', rider: { name: 'Ann', phoneNumber: '+8613800000001' }, card: { cardKey: Buffer.alloc(16) } })).to.deep.equal({
      request_id: 'r1',
      account_id: 'a1',
    });
    const taps = Array.from({ length: 7 }, (_, i) => ({ tapId: `T1:${i + 1}`, proof: { mac: Buffer.alloc(8) } }));
    expect(requestIds({ terminalId: 'T1', taps })).to.deep.equal({ terminal_id: 'T1', taps: 7, tap_ids: ['T1:1', 'T1:2', 'T1:3', 'T1:4', 'T1:5'] });
    expect(requestIds({ issuerId: 'i1', items: [{ requestId: 'x' }] })).to.deep.equal({ issuer_id: 'i1', items: 1, item_ids: ['x'] });
    expect(requestIds(undefined)).to.deep.equal({});
  });
});
