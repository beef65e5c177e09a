import { describe, expect, test } from 'bun:test'
import { displayText, editOf, editText, ENCRYPTED_TEXT, redactedId, type ClientEvent } from '../../src/messages/event-text.ts'

/** An event exactly as Synapse 1.157 puts it in an appservice transaction (FIELD-GUIDE §7). */
function ev(type: string, content: Record<string, unknown>, over: Partial<ClientEvent> & Record<string, unknown> = {}): ClientEvent {
  return {
    type,
    room_id: '!kKQuHaOXcTnoRwXzbB:localhost',
    sender: '@carol:localhost',
    content,
    origin_server_ts: 1_764_000_000_000,
    unsigned: { age: 48 },
    event_id: '$Wd2cU0aXLNkJvTBy1kJ0UkOJyR3r7Dn5xxOj1cQq0tE',
    user_id: '@carol:localhost',
    age: 48,
    ...over,
  } as ClientEvent
}

describe('displayText: text', () => {
  test('m.text and m.notice: the body, newlines kept', () => {
    expect(displayText(ev('m.room.message', { msgtype: 'm.text', body: 'hello bob\nsecond line' }), 'Carol')).toBe('hello bob\nsecond line')
    expect(displayText(ev('m.room.message', { msgtype: 'm.notice', body: 'build passed' }), 'Bot')).toBe('build passed')
  })
  test('a reply’s fallback is removed', () => {
    const reply = ev('m.room.message', {
      msgtype: 'm.text',
      body: '> <@carol:localhost> hello bob\n> how are you\n\nreply text',
      format: 'org.matrix.custom.html',
      formatted_body: '<mx-reply><blockquote>…</blockquote></mx-reply>reply text',
      'm.relates_to': { 'm.in_reply_to': { event_id: '$orig' } },
    })
    expect(displayText(reply, 'Bob')).toBe('reply text')
  })
  test('a quote the user typed stays: no reply relation, or a body that does not start with "> <"', () => {
    expect(displayText(ev('m.room.message', { msgtype: 'm.text', body: '> <quote>\n\nmine' }), 'C')).toBe('> <quote>\n\nmine')
    const v113Reply = ev('m.room.message', { msgtype: 'm.text', body: '> as you said\n\nyes', 'm.relates_to': { 'm.in_reply_to': { event_id: '$o' } } })
    expect(displayText(v113Reply, 'C')).toBe('> as you said\n\nyes')
  })
  test('m.emote: * name body', () => {
    expect(displayText(ev('m.room.message', { msgtype: 'm.emote', body: 'waves' }), 'Carol')).toBe('* Carol waves')
  })
  test('an unknown msgtype shows its body, as the spec asks of clients', () => {
    expect(displayText(ev('m.room.message', { msgtype: 'org.example.custom', body: 'fallback text' }), 'C')).toBe('fallback text')
  })
})

describe('displayText: media, one line', () => {
  test('m.image with body, url and info', () => {
    const image = ev('m.room.message', { msgtype: 'm.image', body: 'cat.png', url: 'mxc://localhost/abc', info: { mimetype: 'image/png', size: 1234, w: 10, h: 10 } })
    expect(displayText(image, 'C')).toBe('Image: cat.png')
  })
  test('a filename beside a different body makes the body a caption', () => {
    const file = ev('m.room.message', { msgtype: 'm.file', body: 'the\nreport', filename: 'q3.pdf', url: 'mxc://localhost/def' })
    expect(displayText(file, 'C')).toBe('File: q3.pdf — the report')
  })
  test.each([
    ['m.audio', 'voice.ogg', 'Audio: voice.ogg'],
    ['m.video', 'clip.mp4', 'Video: clip.mp4'],
  ])('%s', (msgtype, body, text) => {
    expect(displayText(ev('m.room.message', { msgtype, body, url: 'mxc://localhost/x' }), 'C')).toBe(text)
  })
  test('m.location: description and geo URI', () => {
    const loc = ev('m.room.message', { msgtype: 'm.location', body: 'Big Ben, London', geo_uri: 'geo:51.5008,0.1247' })
    expect(displayText(loc, 'C')).toBe('Location: Big Ben, London (geo:51.5008,0.1247)')
  })
  test('m.sticker (an event type of its own)', () => {
    expect(displayText(ev('m.sticker', { body: 'thumbs up', url: 'mxc://localhost/s', info: {} }), 'C')).toBe('Sticker: thumbs up')
  })
})

describe('displayText: encrypted', () => {
  const encrypted = (relates?: Record<string, unknown>) =>
    ev('m.room.encrypted', {
      algorithm: 'm.megolm.v1.aes-sha2',
      ciphertext: 'AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg2yyOwAtHaZTwyNg37afzg8f3r9IsN9r4RNFg7MaZencUJe4qvELiDiopUjy5wYes8DTbh5mBuJkolcLIIw6hDkD8HqVV6sYYeSyOb1S4Ps0tVVeIZi0G5r2f7xq3UbjTNrqdaYVxdC7vuv9iXSnXDjIPLe6rFiWsVOhN8A4EkSzunwvHGm/6ag/ok4lzFGTTnUMeBKsfVfjfoH2WFigmo2xhETtOSvT5Jli4pcImFWg8oq2OxYw0dd8jUcDeZEQ6drrqeGJX2cH1JfSwkQdOM6Fi3gSqQAlFm71gzF+uuzpQVqh0i4ihdI3q+aFOajKxN+QYKn7YP+DjlLOb6fZQxqSz8Ot/k9qTcf4f0RJVRHtuRCVbXLVpb/k5AC2GbSWRmMq5u1lDRH7rmjiWU0fgWT95uuVKIUs4JmBe5yYQnT4Hcp+nWL9DiZgIKNdP3hmGDtSy2Di9DpALX8qdh4qQPVrlJw',
      device_id: 'KEYXIVMLRQ',
      sender_key: 'oNe1+WHDdCb1hqX2NU5pmeSnC7u9IKL9Zmt9yU/kV1M',
      session_id: 'Hj5xP6eoATCj0kGlGzJEb8mJTJGaGvA4P7F9eONm7xM',
      ...(relates ? { 'm.relates_to': relates } : {}),
    })
  test('one line saying it must be read in a Matrix client', () => {
    expect(displayText(encrypted(), 'C')).toBe(ENCRYPTED_TEXT)
    expect(ENCRYPTED_TEXT).toContain('Matrix client')
    expect(displayText(encrypted({ 'm.in_reply_to': { event_id: '$o' } }), 'C')).toBe(ENCRYPTED_TEXT)
  })
  test('none for an encrypted edit or reaction (their relation is in clear)', () => {
    expect(displayText(encrypted({ rel_type: 'm.replace', event_id: '$orig' }), 'C')).toBeUndefined()
    expect(displayText(encrypted({ rel_type: 'm.annotation', event_id: '$orig', key: '👍' }), 'C')).toBeUndefined()
    expect(editOf(encrypted({ rel_type: 'm.replace', event_id: '$orig' }))).toBe('$orig')
  })
})

describe('displayText: never listed', () => {
  test.each<[string, ClientEvent]>([
    ['a reaction', ev('m.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: '$o', key: '👍' } })],
    ['a verification request (in a room)', ev('m.room.message', { msgtype: 'm.key.verification.request', body: 'Carol is requesting to verify', from_device: 'D', methods: [] })],
    ['a verification event', ev('m.key.verification.start', { method: 'm.sas.v1' })],
    ['a membership', ev('m.room.member', { membership: 'join', displayname: 'Carol' }, { state_key: '@carol:localhost' })],
    ['a room name', ev('m.room.name', { name: 'Team' }, { state_key: '' })],
    ['a state event of the message type', ev('m.room.message', { msgtype: 'm.text', body: 'x' }, { state_key: '' })],
    ['a redaction', ev('m.room.redaction', { redacts: '$o' }, { redacts: '$o' })],
    ['a redacted message (empty content)', ev('m.room.message', {}, { unsigned: { age: 1, redacted_because: {} } })],
    ['a receipt', ev('m.receipt', { $o: { 'm.read': { '@bob:localhost': { ts: 1 } } } })],
    ['typing', ev('m.typing', { user_ids: ['@carol:localhost'] })],
    ['a call invite', ev('m.call.invite', { call_id: 'c', version: 1 })],
  ])('%s', (_, event) => {
    expect(displayText(event, 'C')).toBeUndefined()
  })
})

describe('edits', () => {
  const edit = ev('m.room.message', {
    msgtype: 'm.text',
    body: '* hello bob!',
    'm.new_content': { msgtype: 'm.text', body: 'hello bob!' },
    'm.relates_to': { rel_type: 'm.replace', event_id: '$orig' },
  })
  test('editOf names the original; the text is ✎ + the new body', () => {
    expect(editOf(edit)).toBe('$orig')
    expect(editText(edit)).toBe('✎ hello bob!')
    expect(displayText(edit, 'C')).toBe('✎ hello bob!')
  })
  test('an edit without m.new_content shows nothing', () => {
    const bare = ev('m.room.message', { msgtype: 'm.text', body: '* x', 'm.relates_to': { rel_type: 'm.replace', event_id: '$orig' } })
    expect(displayText(bare, 'C')).toBeUndefined()
  })
  test('not an edit: a plain message, a reply, a thread message, a reaction', () => {
    expect(editOf(ev('m.room.message', { msgtype: 'm.text', body: 'x' }))).toBeUndefined()
    expect(editOf(ev('m.room.message', { msgtype: 'm.text', body: 'x', 'm.relates_to': { 'm.in_reply_to': { event_id: '$o' } } }))).toBeUndefined()
    expect(editOf(ev('m.room.message', { msgtype: 'm.text', body: 'x', 'm.relates_to': { rel_type: 'm.thread', event_id: '$o' } }))).toBeUndefined()
    expect(editOf(ev('m.reaction', { 'm.relates_to': { rel_type: 'm.replace', event_id: '$o' } }))).toBeUndefined()
  })
})

describe('redactedId', () => {
  test('content.redacts first (room version 11), then the top level', () => {
    expect(redactedId(ev('m.room.redaction', { redacts: '$inContent' }, { redacts: '$topLevel' }))).toBe('$inContent')
    expect(redactedId(ev('m.room.redaction', { reason: 'spam' }, { redacts: '$topLevel' }))).toBe('$topLevel')
    expect(redactedId(ev('m.room.redaction', {}))).toBeUndefined()
    // Not an event ID: PostgreSQL refused to compare a number with its text column.
    expect(redactedId(ev('m.room.redaction', {}, { redacts: 42 as never }))).toBeUndefined()
    expect(redactedId(ev('m.room.redaction', { redacts: 42 }, { redacts: '$topLevel' }))).toBe('$topLevel')
  })
  test('only for redactions', () => {
    expect(redactedId(ev('m.room.message', { msgtype: 'm.text', body: 'x', redacts: '$o' }, { redacts: '$o' }))).toBeUndefined()
  })
})
