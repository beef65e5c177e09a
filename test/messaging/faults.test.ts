/** Storage faults while a transaction is stored: 5xx, nothing half-stored, Synapse's retry succeeds. */
import { afterEach, expect, test } from 'bun:test'
import type { IndexTx } from '../../src/messages/index-store.ts'
import { eventually } from '../harness.ts'
import { directChatSetup, text, uid } from './events.ts'
import { startMessaging, type Messaging } from './support.ts'

let h: Messaging
afterEach(async () => h?.close())

const alice = uid('alice')
const bob = uid('bob')

test('a database failure in the middle of a transaction is a 5xx with nothing stored; the same txnId later succeeds', async () => {
  h = await startMessaging()
  await h.fetch('bob')
  const index = h.index!
  const realWrite = index.write.bind(index)
  let failing = true
  // The second message of the transaction hits an I/O error, as a full disk would.
  index.write = (fn) =>
    realWrite((tx) => {
      let inserts = 0
      const faulty: IndexTx = {
        ...tx,
        insertMessage: async (m, now) => {
          if (failing && ++inserts === 2) throw Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR_WRITE' })
          return tx.insertMessage(m, now)
        },
      }
      return fn(faulty)
    })
  const room = '!dm:example.org'
  const events = [...directChatSetup(room, alice, bob), text({ room, sender: alice }, 'one'), text({ room, sender: alice }, 'two')]
  const res = await h.txn('500', events)
  expect(res.status).toBe(503)
  expect(res.json.errcode).toBe('M_UNAVAILABLE')
  expect(await index.countMessages()).toBe(0)
  expect(h.logs.parsed().some((l) => l.msg === 'transaction not stored; Synapse will send it again' && l.txn_id === '500')).toBe(true)
  failing = false
  expect((await h.txn('500', events)).status).toBe(200)
  expect((await h.fetch('bob')).json.received_smss.map((i: any) => i.sms_text)).toEqual(['one', 'two'])
})

test('the fake Synapse retries a failed transaction until the proxy stores it', async () => {
  h = await startMessaging()
  await h.fetch('bob')
  const index = h.index!
  const realWrite = index.write.bind(index)
  let failures = 0
  index.write = (fn) => (failures++ < 2 ? Promise.reject(Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' })) : realWrite(fn))
  const room = h.synapse.rooms.createRoom(alice, { preset: 'trusted_private_chat', invite: [bob], is_direct: true })
  const id = h.synapse.sendText(alice, room, 'persistent')
  await h.settle()
  const attempts = h.synapse.appservice.attempts
  expect(attempts.some((a) => a.status === 503)).toBe(true)
  // Every retry carries the same txnId and the same events.
  const failed = attempts.find((a) => a.status === 503)!
  expect(attempts.filter((a) => a.txnId === failed.txnId).every((a) => JSON.stringify(a.events) === JSON.stringify(failed.events))).toBe(true)
  await eventually(async () => (await h.fetch('bob')).json.received_smss.some((i: any) => i.sms_id === id))
})
