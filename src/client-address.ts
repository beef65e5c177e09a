/**
 * The address a request came from: the socket's, or, only when the socket is a trusted reverse
 * proxy (TRUST_PROXY), the nearest untrusted hop in X-Forwarded-For. Anyone can write that header,
 * so believing it from untrusted peers would let a client pick its own rate-limit bucket.
 * Also what kind of address it is (loopback, private) and the group a rate limit counts it in.
 */
import { BlockList, isIP } from 'node:net'
import type { AddressSet } from './config.ts'

const unmap = (address: string) => (address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address)

export function clientAddress(socket: string | undefined, forwardedFor: string | null, trust: AddressSet | undefined): string | undefined {
  if (socket === undefined) return undefined
  const peer = unmap(socket)
  if (!trust || !forwardedFor || !trust.has(peer)) return peer
  const hops = forwardedFor.split(',').map((h) => unmap(h.trim())).filter(Boolean)
  for (let i = hops.length - 1; i >= 0; i--) {
    if (!trust.has(hops[i]!)) return hops[i]
  }
  return hops[0] ?? peer
}

const blockList = (v4: ReadonlyArray<readonly [string, number]>, v6: ReadonlyArray<readonly [string, number]>) => {
  const list = new BlockList()
  for (const [net, bits] of v4) list.addSubnet(net, bits, 'ipv4')
  for (const [net, bits] of v6) list.addSubnet(net, bits, 'ipv6')
  return list
}
const check = (list: BlockList) => (address: string) => {
  const family = isIP(unmap(address))
  return family !== 0 && list.check(unmap(address), family === 6 ? 'ipv6' : 'ipv4')
}

const LOOPBACK = blockList([['127.0.0.0', 8]], [['::1', 128]])
// Synapse's default ip_range_blacklist covers these (docs: "ip_range_blacklist"); a pusher URL
// on one of them fails inside Synapse unless ip_range_whitelist allows it.
const PRIVATE = blockList(
  [['127.0.0.0', 8], ['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['169.254.0.0', 16], ['100.64.0.0', 10], ['0.0.0.0', 8]],
  [['::1', 128], ['fc00::', 7], ['fe80::', 10], ['::', 128]],
)

export const isLoopbackAddress = check(LOOPBACK)
/** Loopback, private, link-local, carrier-grade NAT or unspecified. */
export const isPrivateAddress = check(PRIVATE)
/** A host name or literal that means this machine only (`localhost`, 127.0.0.0/8, ::1). */
export const isLoopbackHost = (host: string) => {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase()
  return bare === 'localhost' || bare.endsWith('.localhost') || isLoopbackAddress(bare)
}

/**
 * What a per-address limit counts an address as: itself for IPv4, its /64 for IPv6 (one
 * subscriber usually gets a whole /64, and could otherwise use a fresh address for every try).
 */
export function rateLimitGroup(address: string): string {
  const bare = unmap(address.split('%')[0]!)
  if (isIP(bare) !== 6) return bare
  const [head = '', tail] = bare.toLowerCase().split('::')
  // An embedded IPv4 tail (64:ff9b::1.2.3.4) is two groups; only the first four matter here.
  const groups = (s: string) => (s ? s.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : [])
  const h = groups(head)
  const t = tail === undefined ? [] : groups(tail)
  const full = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t]
  return `${full.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`
}
