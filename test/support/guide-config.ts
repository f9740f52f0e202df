/**
 * The whole /etc/volant/volantd.yaml of the Volant networking guide ("Custom Subnets"), copied as
 * written there: what a user following the guide puts on their host. docs/config.md shows it too.
 */
export const GUIDE_VOLANTD_YAML = `networking:
  bridge:
    name: volant0
    subnet: 10.200.0.0/16
    gateway: 10.200.0.1
    ip_range:
      start: 10.200.1.0
      end: 10.200.255.254
`;
